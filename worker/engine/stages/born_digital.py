"""Born-digital PDF pages: stop where the page shows no code, and read a located code from a
render of its region alone (issue 22).

A page that worker.engine.pdf_pages shows to be born-digital (text and vectors, images small)
is clean: no blur, no noise, no shadow. Rendered at the fast pass's resolution, a code on it
shows as zxing's located symbol, a finder pattern (nested squares of at least 2 pixels a
module) or a block of code texture (texture_blocks, down to 0.75 pixels a module, at any
angle). A page that shows none of them holds no code, and the later stages (the detectors, a
render at QRW_PDF_DPI, then every enhancement over it) would only cost time: it is settled.
`finish` runs before any detector does (the first detector stage calls it, so a page is
settled without an inference: the models are trained on photos, and cost more than the whole
reading of a clean page), and again in the thorough pass for a page the detectors then boxed.
Scanned and mixed pages never are settled: a photo or a scan on the page can hide a code from
all three, and those pages keep every stage.

Where the page does show a code that is still unread, only that region is rendered, at a
resolution that gives it at least 4 pixels a module (a vector code stays sharp at any
resolution), and read there; what that leaves unread goes on to the detectors (boxes only) and
the thorough pass.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from worker.engine import evidence, finders, zxing_reader
from worker.engine.cascade import Box, StageContext, box_centre
from worker.engine.deadline import spend
from worker.engine.images import Page
from worker.engine.pdf_pages import BORN_DIGITAL
from worker.engine.stages import soft

# Pixels a module a region is rendered at: zxing reads a clean code from 3 up.
MIN_PX_PER_MODULE = 4.0
# Where the module size is unknown (a detector's box, a block of texture), the box is taken
# for a version 40 code, the densest there is.
_MAX_MODULES = 177
# Around a region: the code's quiet zone (4 modules) and the box's own error.
_MARGIN = 0.2
# A region render is kept under this many pixels (about 6 MB): a whole A4 page at 300 DPI
# is 8.7 MP.
_MAX_REGION_PIXELS = 6_000_000
# Modules a side of the smallest QR code with its quiet zone: version 1 (21) and 4 a side.
_SMALLEST_CODE = 29
# Regions read per page: the detectors report at most 32 candidates.
_MAX_REGIONS = 8
# Texture blocks (texture_blocks): evidence's cells and thresholds, any block of 3 cells a
# side or more, square to 1.6, a third filled (a code turned 45 degrees fills half its
# bounding box).
_MIN_CELLS = 3
_MAX_ASPECT = 1.6
_MIN_FILL = 0.35


def is_born_digital(page: Page) -> bool:
    return page.kind == BORN_DIGITAL and page.region is not None


def finish(ctx: StageContext, page: Page) -> bool:
    """Read born-digital `page` where its fast render shows a code, from renders of those
    regions alone; settle it when nothing shows, or when every region, rendered at
    MIN_PX_PER_MODULE or more, showed nothing of a code (a detector's box over text: the
    box is dismissed). True when the page needs no more stages: no detector, no more of
    the thorough pass."""
    gray, scale = page.gray(ctx.settings.fast_max_side)
    # What the fast render shows, in page pixels, with the module size where a finder says.
    places: list[tuple[Box, float | None]] = [(b, None) for b in ctx.findings.regions(page.index)]
    places += _finder_groups(finders.find_finders(gray), scale)
    places += [
        ((x0 / scale, y0 / scale, x1 / scale, y1 / scale), None)
        for x0, y0, x1, y1 in texture_blocks(gray)
    ]
    showed = False  # whether a place showed something of a code that stayed unread
    looked: list[tuple[Box, float]] = []  # regions read at 4 px a module or more, and their factor
    for box, module in places:
        # Every place is looked at, a code read or not: "all" would call the page done once
        # one code is read and nothing zxing located is left, and a code that showed only as
        # texture would be lost.
        if ctx.deadline.expired() or (ctx.want == "first" and ctx.findings.codes):
            return True
        centre = box_centre(box)
        plan = _plan(page, box, module)
        if plan is None or ctx.findings.covers(page.index, centre):
            continue
        region, factor, enough = plan
        # Read already, at this resolution or finer.
        if any(_inside(seen, centre) and f >= factor for seen, f in looked):
            continue
        if len(looked) >= _MAX_REGIONS or not enough:
            showed = True  # not looked at closely enough: the thorough pass looks
            continue
        empty = _read_region(ctx, page, region, factor)
        looked.append((region, factor))
        if empty:
            ctx.findings.dismiss(page.index, _boxes_seen(ctx, page, region, factor))
        elif not ctx.findings.covers(page.index, centre):
            showed = True
    if ctx.page_done(page.index):
        return True
    if showed or ctx.findings.regions(page.index):
        return False
    if not ctx.findings.has_code(page.index):
        ctx.findings.settle(page.index)
    return True


def _boxes_seen(ctx: StageContext, page: Page, region: Box, factor: float) -> list[Box]:
    """The detector boxes on `page` centred in `region` that a render of it at `factor`
    showed closely enough: those the same rule would have rendered at `factor` or less."""
    seen = []
    for box in ctx.findings.detector_boxes.get(page.index, ()):
        plan = _plan(page, box, None)
        if plan is not None and _inside(region, box_centre(box)) and plan[1] <= factor:
            seen.append(box)
    return seen


def _plan(page: Page, box: Box, module: float | None) -> tuple[Box, float, bool] | None:
    """The region to render for `box` (page pixels, grown by its margin), the factor over
    the page's resolution that gives it MIN_PX_PER_MODULE (`module`: page pixels a module
    where known; otherwise the box is taken for the densest code there is), and whether
    that factor fits the region's pixel budget. None for a box too small to hold a code."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    margin = _MARGIN * side
    left, top = max(0.0, x0 - margin), max(0.0, y0 - margin)
    right, bottom = min(float(page.width), x1 + margin), min(float(page.height), y1 + margin)
    if right - left < 4 or bottom - top < 4:
        return None
    per_module = module if module is not None else side / _MAX_MODULES
    factor = max(1.0, MIN_PX_PER_MODULE / max(per_module, 1e-3))
    budget = math.sqrt(_MAX_REGION_PIXELS / ((right - left) * (bottom - top)))
    return (left, top, right, bottom), min(factor, budget), factor <= budget


def _read_region(ctx: StageContext, page: Page, region: Box, factor: float) -> bool:
    """Render `region` (page pixels) at `factor` times the page's resolution and read it;
    whether it showed nothing of a code: no symbol zxing located, no finder pattern."""
    image, transform = _render(page, region, factor)
    symbols = zxing_reader.read(image, transform)
    ctx.findings.add(
        symbols,
        page=page.index,
        stage="thorough",
        decoder=zxing_reader.DECODER,
        variant="vector_region",
    )
    soft.read_located(ctx, page, symbols, stage="thorough", variant="vector_region")
    return not symbols and not _code_finders(image)


def _code_finders(image: np.ndarray) -> list[finders.Finder]:
    """The finder patterns in a region's render small enough to be a code's: a code of 21
    modules and its quiet zone (29) fit in the region, so a finder's module is at most a
    29th of its side (rendered large, a bold letter's counters can nest like a finder)."""
    largest = min(image.shape[:2]) / _SMALLEST_CODE
    return [f for f in finders.find_finders(image) if f.module <= largest]


def render_region(
    page: Page, box: Box, module: float | None = None
) -> tuple[np.ndarray, zxing_reader.Transform, Box] | None:
    """Born-digital `page`'s `box` (page pixels) grown by a margin, rendered alone at
    MIN_PX_PER_MODULE or more where the pixel budget allows (see _plan): the image, the
    transform from its pixels to the page's, and the region rendered. None for a box too
    small to hold a code."""
    plan = _plan(page, box, module)
    if plan is None:
        return None
    region, factor, _ = plan
    image, transform = _render(page, region, factor)
    return image, transform, region


def _render(page: Page, region: Box, factor: float) -> tuple[np.ndarray, zxing_reader.Transform]:
    assert page.region is not None
    image, offset_x, offset_y = page.region(region, factor)
    spend("render", image.size)
    return image, zxing_reader.Transform(factor, offset_x=offset_x, offset_y=offset_y)


def texture_blocks(gray: np.ndarray) -> list[Box]:
    """Blocks of code texture in a fast render (its pixels), found as worker.engine.evidence
    finds them (8-pixel cells about half dark and full of pixel-to-pixel edges) but kept
    where evidence.dense_squares would leave them out: a block proves nothing here, it only
    earns a look, and a page is settled only where none shows. So a code turned near 45
    degrees (its cells fill half its bounding box) and one of 3 cells a side count; lines of
    text (one to three cells high, many long) do not."""
    cell = evidence._CELL
    height, width = gray.shape[:2]
    rows, cols = (height - 1) // cell, (width - 1) // cell
    if rows < _MIN_CELLS or cols < _MIN_CELLS:
        return []
    h, w = rows * cell, cols * cell
    mean = evidence._cells(gray[:h, :w])
    low, high = evidence._MEAN_GREY
    grey = (mean > low) & (mean < high)
    # A block is grey cells, so it lies within one 8-connected component of them: edges are
    # measured only in the rows of the components 3 cells a side or more (a logo, a heading,
    # the codes), the same blocks as over the whole page at a fifth of the cost.
    _, _, grey_stats, _ = cv2.connectedComponentsWithStats(grey.view(np.uint8), connectivity=8)
    tops, heights = grey_stats[1:, 1], grey_stats[1:, 3]
    big = np.minimum(grey_stats[1:, 2], heights) >= _MIN_CELLS
    if not big.any():
        return []
    strength = np.zeros_like(mean)
    for top, bottom in evidence._bands(tops[big].tolist(), (tops[big] + heights[big]).tolist()):
        strength[top:bottom] = edge_cells(gray, top, bottom, cols)
    candidate = grey & (strength > evidence._EDGES)
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        candidate.astype(np.uint8), connectivity=8
    )
    # Most components are fragments of text: filtered at once, not one by one in Python.
    x, y, bw, bh, area = stats[1:count].T
    short, long = np.minimum(bw, bh), np.maximum(bw, bh)
    keep = (short >= _MIN_CELLS) & (long <= _MAX_ASPECT * short) & (area >= _MIN_FILL * bw * bh)
    return [
        (float(x0 * cell), float(y0 * cell), float((x0 + w0) * cell), float((y0 + h0) * cell))
        for x0, y0, w0, h0 in np.stack([x, y, bw, bh], axis=1)[keep].tolist()
    ]


def edge_cells(gray: np.ndarray, top: int, bottom: int, cols: int) -> np.ndarray:
    """Each cell's mean edge strength (the pixel right of and below each pixel, summed) in
    cell rows `top` to `bottom` and the first `cols` columns; the page has one more row and
    column than its cells."""
    cell = evidence._CELL
    y0, y1, w = top * cell, bottom * cell, cols * cell
    base = gray[y0:y1, :w]
    across = cv2.absdiff(gray[y0:y1, 1 : w + 1], base)
    return evidence._cells(cv2.add(across, cv2.absdiff(gray[y0 + 1 : y1 + 1, :w], base)))


def _finder_groups(found: list[finders.Finder], scale: float) -> list[tuple[Box, float]]:
    """Finder patterns grouped into the codes they would be corners of (page pixels): those
    of about one module size within a version-40 code's reach of each other; each group's
    box spans its finders' centres and the 3.5 modules to a finder's edge. A lone finder
    (the others not found) gets a box reaching 30 modules from it, a small code's size."""
    groups: list[list[finders.Finder]] = []
    for finder in sorted(found, key=lambda f: -f.module):
        for group in groups:
            head = group[0]
            near = np.hypot(*(finder.centre - head.centre)) <= head.module * _MAX_MODULES
            if near and 0.7 <= finder.module / head.module <= 1.4:
                group.append(finder)
                break
        else:
            groups.append([finder])
    boxes: list[tuple[Box, float]] = []
    for group in groups:
        module = float(np.mean([f.module for f in group])) / scale
        xs = [float(f.centre[0]) / scale for f in group]
        ys = [float(f.centre[1]) / scale for f in group]
        reach = module * (3.5 if len(group) > 1 else 30.0)
        boxes.append(((min(xs) - reach, min(ys) - reach, max(xs) + reach, max(ys) + reach), module))
    return boxes


def _inside(box: Box, point: tuple[float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]
