"""Stage 1: one zxing-cpp pass over a reduced page. Reads the easy majority in a few ms."""

from __future__ import annotations

from worker.engine import zxing_reader
from worker.engine.cascade import StageContext


class FastStage:
    name = "fast"
    cost = 1.0

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
