"""Stage 1: one zxing-cpp pass over a reduced page. Reads the easy majority in a few ms."""

from __future__ import annotations

import numpy as np

from worker.engine import zxing_reader
from worker.engine.cascade import StageContext

# A rendered page (PDF, e-invoice image) is mostly paper at full white; a photo of paper
# almost never is (room light, shading, sensor noise). Over the benchmark corpus rendered
# pages are 88% or more white, photos at most 22% (real ones 46%).
_RENDERED_WHITE_SHARE = 0.6
_WHITE = 250


class FastStage:
    name = "fast"
    cost = 1.0

    def __init__(self, look_again_at_photos: bool = False) -> None:
        # Pages with several codes are mostly photos of forms and parcels, where the fast
        # pass reads the sharp code and does not even locate the blurred or distant one.
        self.look_again_at_photos = look_again_at_photos

    def run(self, ctx: StageContext) -> None:
        for page in ctx.pages_to_scan():
            gray, scale = page.gray(ctx.settings.fast_max_side)
            symbols = zxing_reader.read(gray, zxing_reader.Transform(scale))
            ctx.findings.add(
                symbols,
                page=page.index,
                stage=self.name,
                decoder=zxing_reader.DECODER,
                variant="reduced" if scale < 1.0 else "full",
            )
            if (
                self.look_again_at_photos
                and ctx.want == "all"
                and any(s.valid for s in symbols)
                and not rendered(gray)
            ):
                ctx.findings.ask_another_look(page.index)


def rendered(gray: np.ndarray) -> bool:
    """Whether the page looks rendered rather than photographed: mostly full white."""
    return np.count_nonzero(gray >= _WHITE) >= _RENDERED_WHITE_SHARE * gray.size
