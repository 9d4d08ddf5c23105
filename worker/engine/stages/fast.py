"""Stage 1: one zxing-cpp pass over a reduced page. Reads the easy majority in a few ms.

On a rendered page reduced for the pass, a read code does not settle the page by itself: a
dense code printed beside it may have shrunk below a pixel a module, too small to be even
located (issue 19). Where the reduced page shows a code's texture that no read code covers
(worker.engine.evidence, about 0.2 ms), that region alone is read again at full size, whether
the pass read a code or none (then the detectors may read only some of the page's codes).
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.engine import evidence, zxing_reader
from worker.engine.cascade import StageContext
from worker.engine.images import Page
from worker.engine.stages import born_digital, soft

# A rendered page (PDF, e-invoice image) is mostly paper at full white; a photo of paper
# almost never is (room light, shading, sensor noise). Over the benchmark corpus rendered
# pages are 88% or more white, photos at most 22% (real ones 46%).
_RENDERED_WHITE_SHARE = 0.6
_WHITE = 250
# Around a textured block: its cells may cut off up to a cell of the code, and zxing wants
# the quiet zone (4 modules of a 53-module code or larger: under a tenth of its side).
_REGION_MARGIN = 0.15


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
            # Against the page's own pixels: a scan coarser than its PDF page's grid (scale
            # under 1) comes whole, as its file does.
            reduced = max(gray.shape[:2]) < max(page.native or (page.width, page.height))
            variant = "reduced" if reduced else "full"
            ctx.findings.add(
                symbols,
                page=page.index,
                stage=self.name,
                decoder=zxing_reader.DECODER,
                variant=variant,
            )
            softly = soft.read_located(ctx, page, symbols, stage=self.name, variant=variant)
            half = evidence.halve(gray)
            is_rendered = rendered(gray, half)
            if is_rendered:
                ctx.findings.rendered_pages.add(page.index)
            if ctx.want != "all":
                continue
            read_any = softly or any(s.valid for s in symbols)
            if is_rendered:
                # Also where nothing was read: the detectors may then read only some of the
                # page's codes (two of three Micro QR codes on a 144 DPI invoice halved), and
                # the page would be done with the last one never looked at. A born-digital
                # page's own stage looks at every block (born_digital.finish).
                if reduced and (read_any or not born_digital.is_born_digital(page)):
                    self._dense_regions(ctx, page, gray, scale, half)
            elif read_any and self.look_again_at_photos:
                ctx.findings.ask_another_look(page.index)

    def _dense_regions(
        self,
        ctx: StageContext,
        page: Page,
        gray: np.ndarray,
        scale: float,
        half: np.ndarray,
    ) -> None:
        """Read at full size each block of code texture the reduced read left uncovered. On
        a rendered page zxing locates at full size any code clean enough to show as such
        texture: a block where it locates nothing is ruled out (a logo, a title's letters),
        one it locates and cannot read stays unread for the next stage. `half` is the page's
        evidence.halve(gray), made once for this and rendered()."""
        read = [
            tuple((x * scale, y * scale) for x, y in code.quad)
            for code in ctx.findings.codes
            if code.page == page.index
        ]
        for x0, y0, x1, y1 in evidence.dense_squares(gray, read, half):  # type: ignore[arg-type]
            centre = ((x0 + x1) / 2.0 / scale, (y0 + y1) / 2.0 / scale)
            if ctx.deadline.expired() or ctx.findings.covers(page.index, centre):
                continue
            if born_digital.is_born_digital(page):
                # A vector page: the block alone, rendered at 4 pixels a module or more.
                box = (x0 / scale, y0 / scale, x1 / scale, y1 / scale)
                rendered = born_digital.render_region(page, box)
                if rendered is None:
                    continue
                region, transform, _ = rendered
                symbols = zxing_reader.read(region, transform)
            else:
                full, full_scale = page.gray(ctx.settings.thorough_max_side)
                factor = full_scale / scale
                margin = _REGION_MARGIN * max(x1 - x0, y1 - y0)
                height, width = full.shape[:2]
                left = max(0, int((x0 - margin) * factor))
                top = max(0, int((y0 - margin) * factor))
                right = min(width, int((x1 + margin) * factor) + 1)
                bottom = min(height, int((y1 + margin) * factor) + 1)
                transform = zxing_reader.Transform(full_scale, offset_x=left, offset_y=top)
                symbols = zxing_reader.read(full[top:bottom, left:right], transform)
            ctx.findings.add(
                symbols,
                page=page.index,
                stage=self.name,
                decoder=zxing_reader.DECODER,
                variant="full_region",
            )
            soft.read_located(ctx, page, symbols, stage=self.name, variant="full_region")


def rendered(gray: np.ndarray, half: np.ndarray | None = None) -> bool:
    """Whether the page looks rendered rather than photographed: mostly full white.
    `half` is the page's evidence.halve(gray), where the caller has it: a 2x2 mean of 255
    is four full-white pixels (their sum is 1018 or more, each pixel 253 or more), and on a
    rendered page those alone reach the share, which spares the count over every pixel
    (330 of the corpus's and speed sets' 332 rendered pages; issue 19). Elsewhere every
    pixel is counted: the answer is the count's."""
    needed = _RENDERED_WHITE_SHARE * gray.size
    if half is not None:
        full = cv2.threshold(half, 254, 255, cv2.THRESH_BINARY)[1]
        if 4 * cv2.countNonZero(full) >= needed:
            return True
    # OpenCV's threshold and count: the same count as numpy's `gray >= _WHITE`, a fifth less
    # time on every page the fast pass sees (30 against 37 us on a 2 MP page halved).
    white = cv2.threshold(gray, _WHITE - 1, 255, cv2.THRESH_BINARY)[1]
    return cv2.countNonZero(white) >= needed
