"""Stage 2: full resolution, harder zxing options, tiles and enhancement variants.

Variants run cheapest and most often useful first, and the stage stops as soon as the
request is satisfied or the deadline passes, so its cost is only paid in full on pages
that truly need it.

Where a detector has already looked at the page, the pass is guided by what it saw
instead of searching blind: the whole page gets only the cheap reads, and the costly
enhancements go to the regions where a detector or zxing saw a candidate. Over the
benchmark corpus the costly whole-page variants and the tiles read a code outside
those regions on none but low-contrast pages the detectors found blank (which keep
CLAHE), while running on every page left unread, the pages that make the tail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zxingcpp

from worker.engine import enhance, rectify, zxing_reader
from worker.engine.cascade import Box, StageContext, box_centre
from worker.engine.images import Page
from worker.engine.stages import born_digital, outlined, soft
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


def _same(gray: np.ndarray) -> np.ndarray:
    return gray


_FULL = Variant("full", _same)
_GLOBAL_HISTOGRAM = Variant("global_histogram", _same, _GLOBAL)
_UNSHARP = Variant("unsharp", enhance.unsharp)
_CLAHE = Variant("clahe", enhance.clahe)
_LOCAL_THRESHOLD = Variant("local_threshold", enhance.local_threshold, _BINARY)
_DENOISE = Variant("denoise", enhance.denoise, _GLOBAL)

# Pages no detector looked at (the classical cascade): the exhaustive blind search.
_WHOLE_PAGE_VARIANTS = (_FULL, _GLOBAL_HISTOGRAM, _UNSHARP, _CLAHE, _LOCAL_THRESHOLD, _DENOISE)
# Pages a detector looked at: the whole-page read that costs a few ms, and locates symbols
# for the regions' reads below. Not the global histogram's read nor the median-filtered one:
# over the benchmark corpus and qr-photos-val (1,850 images, 2026-12-07) the same codes were
# read without both, and the same pages were complete, where they cost 1,800 work units
# (two more zxing-cpp passes over the whole page at up to thorough_max_side, one of them
# median-filtered first).
_GUIDED_VARIANTS = (_FULL,)
# ...and on pages it found blank, CLAHE too: faded codes the detectors miss, it reads.
_BLIND_VARIANTS = (*_GUIDED_VARIANTS, _CLAHE)


# Around a candidate: the enhancements that cost too much on a whole page. CLAHE and the
# local threshold adapt to windows sized from the image; a region gets the windows the
# whole page would have had, or a shadow edge or glare spot fills its few small windows.
@dataclass(frozen=True, slots=True)
class RegionVariant:
    name: str
    prepare: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]  # (crop, page shape)
    options: ReadOptions = zxing_reader.FAST


_REGION_VARIANTS = (
    RegionVariant("region", lambda crop, _: crop),
    RegionVariant("region_unsharp", lambda crop, _: enhance.unsharp(crop)),
    RegionVariant("region_clahe", enhance.clahe),
    RegionVariant("region_threshold", enhance.local_threshold, _BINARY),
)
# A region is the candidate's box grown by this share of its longer side on every side,
# so the whole code is in it even where the box caught only part of it (boxes from a
# glare-split or shaded code cover as little as half of it).
_REGION_MARGIN = 0.5
# Regions smaller than this (thorough-image pixels, longer side) are also read upscaled.
_REGION_UPSCALE_BELOW = 800
# Detectors report at most 32 candidates; on a page full of decoys reading each one
# would be the tail again. The most confident come first.
_MAX_REGIONS = 8


class ThoroughStage:
    name = "thorough"
    cost = 10.0

    def __init__(self, born_digital_rules: bool = True) -> None:
        # Born-digital PDF pages (worker.engine.stages.born_digital): located codes read
        # from renders of their regions, the page settled where it shows no code. False
        # gives them the whole pass, as any other page (the benchmark's comparison,
        # python -m worker.bench.pdf_speed).
        self.born_digital_rules = born_digital_rules

    def run(self, ctx: StageContext) -> None:
        for page in ctx.pages_to_scan():
            rules = self.born_digital_rules and born_digital.is_born_digital(page)
            if rules and born_digital.finish(ctx, page):
                continue
            if page.index in ctx.findings.detector_scores:
                self._guided(ctx, page)
            else:
                self._exhaustive(ctx, page)

    def _guided(self, ctx: StageContext, page: Page) -> None:
        gray, scale = page.gray(ctx.settings.thorough_max_side)
        blind = ctx.findings.searched_blind(page.index)
        self._whole_page(ctx, page, _BLIND_VARIANTS if blind else _GUIDED_VARIANTS)
        done: list[Box] = []
        outlines = outlined.Budget()
        for box in ctx.findings.regions(page.index):
            if ctx.page_done(page.index) or len(done) >= _MAX_REGIONS:
                return
            centre = box_centre(box)
            # Both detectors report the same code: read each place once.
            if any(_contains(seen, centre) for seen in done) or ctx.findings.covers(
                page.index, centre
            ):
                continue
            done.append(box)
            # The detector stages tried outlines in their own boxes already.
            tried = any(
                _contains(b, centre) for b in ctx.findings.detector_boxes.get(page.index, ())
            )
            self._region(ctx, page, gray, scale, box, None if tried else outlines)

    def _region(
        self,
        ctx: StageContext,
        page: Page,
        gray: np.ndarray,
        scale: float,
        box: Box,
        outlines: outlined.Budget | None,
    ) -> None:
        bounds = rectify.padded_bounds(gray.shape, box, scale, _REGION_MARGIN, 8.0)
        if bounds is None:
            return
        left, top, right, bottom = bounds
        crop = gray[top:bottom, left:right]
        transform = Transform(scale, offset_x=float(left), offset_y=float(top))
        for variant in _REGION_VARIANTS:
            if ctx.page_done(page.index):
                return
            self._read(ctx, page, variant.prepare(crop, gray.shape), transform, variant)
        if max(crop.shape) < _REGION_UPSCALE_BELOW and not ctx.page_done(page.index):
            up = Transform(scale * 2.0, offset_x=left * 2.0, offset_y=top * 2.0)
            self._read(ctx, page, enhance.upscale(crop, 2.0), up, Variant("region_upscale", _same))
        if outlines is not None and not ctx.page_done(page.index):
            # zxing located the symbol but not its finder triple (one under glare or a
            # stain): the outline the two surviving finders give is one the soft decoder
            # reads from.
            outlined.read(ctx, page, gray, scale, box, outlines, stage=self.name)

    def _whole_page(self, ctx: StageContext, page: Page, variants: tuple[Variant, ...]) -> None:
        gray, scale = page.gray(ctx.settings.thorough_max_side)
        fast_gray, _ = page.gray(ctx.settings.fast_max_side)
        for variant in variants:
            if ctx.page_done(page.index):
                return
            # The fast stage already ran this exact read on a page that needed no reduction.
            if variant is _FULL and fast_gray is gray:
                continue
            self._read(ctx, page, variant.prepare(gray), Transform(scale), variant)

    def _exhaustive(self, ctx: StageContext, page: Page) -> None:
        gray, scale = page.gray(ctx.settings.thorough_max_side)
        self._whole_page(ctx, page, _WHOLE_PAGE_VARIANTS)
        if max(gray.shape) <= _UPSCALE_LIMIT:
            if not ctx.page_done(page.index):
                up = enhance.upscale(gray, 2.0)
                self._read(ctx, page, up, Transform(scale * 2.0), Variant("upscale", _same))
            return
        for x, y, w, h in enhance.tiles(gray.shape, _TILE, _TILE_OVERLAP):
            if ctx.page_done(page.index):
                return
            tile = enhance.upscale(gray[y : y + h, x : x + w], 1.5)
            transform = Transform(scale * 1.5, offset_x=x * 1.5, offset_y=y * 1.5)
            self._read(ctx, page, tile, transform, Variant("tile", _same))

    def _read(
        self,
        ctx: StageContext,
        page: Page,
        image: np.ndarray,
        transform: Transform,
        variant: Variant | RegionVariant,
    ) -> None:
        symbols = zxing_reader.read(image, transform, variant.options)
        ctx.findings.add(
            symbols,
            page=page.index,
            stage=self.name,
            decoder=zxing_reader.DECODER,
            variant=variant.name,
        )
        soft.read_located(ctx, page, symbols, stage=self.name, variant=variant.name)


def _contains(box: Box, point: tuple[float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]
