"""Stage 2: full resolution, harder zxing options, tiles and enhancement variants.

Variants run cheapest and most often useful first, and the stage stops as soon as the
request is satisfied or the deadline passes, so its cost is only paid in full on pages
that truly need it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zxingcpp

from worker.engine import enhance, zxing_reader
from worker.engine.cascade import StageContext
from worker.engine.images import Page
from worker.engine.zxing_reader import ReadOptions, Transform

_GLOBAL = ReadOptions(binarizer=zxingcpp.Binarizer.GlobalHistogram)
_BINARY = ReadOptions(binarizer=zxingcpp.Binarizer.FixedThreshold, try_downscale=False)

# Pages smaller than this get upscaled whole; larger ones are cut into tiles that are
# upscaled, so small codes gain pixels per module either way.
_UPSCALE_LIMIT = 1600
_TILE = 768
_TILE_OVERLAP = 256


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    prepare: Callable[[np.ndarray], np.ndarray]
    options: ReadOptions = zxing_reader.FAST


_WHOLE_PAGE_VARIANTS = (
    Variant("full", lambda g: g),
    Variant("global_histogram", lambda g: g, _GLOBAL),
    Variant("unsharp", enhance.unsharp),
    Variant("clahe", enhance.clahe),
    Variant("local_threshold", enhance.local_threshold, _BINARY),
    Variant("denoise", enhance.denoise, _GLOBAL),
)


class ThoroughStage:
    name = "thorough"
    cost = 10.0

    def run(self, ctx: StageContext) -> None:
        for page in ctx.pages_to_scan():
            self._page(ctx, page)

    def _page(self, ctx: StageContext, page: Page) -> None:
        gray, scale = page.gray(ctx.settings.thorough_max_side)
        fast_gray, _ = page.gray(ctx.settings.fast_max_side)
        for variant in _WHOLE_PAGE_VARIANTS:
            if ctx.page_done(page.index):
                return
            # The fast stage already ran this exact read on a page that needed no reduction.
            if variant.name == "full" and fast_gray is gray:
                continue
            self._read(ctx, page, variant.prepare(gray), Transform(scale), variant)
        if max(gray.shape) <= _UPSCALE_LIMIT:
            if not ctx.page_done(page.index):
                up = enhance.upscale(gray, 2.0)
                self._read(ctx, page, up, Transform(scale * 2.0), Variant("upscale", lambda g: g))
            return
        for x, y, w, h in enhance.tiles(gray.shape, _TILE, _TILE_OVERLAP):
            if ctx.page_done(page.index):
                return
            tile = enhance.upscale(gray[y : y + h, x : x + w], 1.5)
            transform = Transform(scale * 1.5, offset_x=x * 1.5, offset_y=y * 1.5)
            self._read(ctx, page, tile, transform, Variant("tile", lambda g: g))

    def _read(
        self,
        ctx: StageContext,
        page: Page,
        image: np.ndarray,
        transform: Transform,
        variant: Variant,
    ) -> None:
        symbols = zxing_reader.read(image, transform, variant.options)
        ctx.findings.add(
            symbols,
            page=page.index,
            stage=self.name,
            decoder=zxing_reader.DECODER,
            variant=variant.name,
        )
