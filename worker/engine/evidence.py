"""The cheapest evidence that a rendered page holds a code the reduced pass did not see.

A dense code printed small (a payment record at 0.3-0.45 mm a module) shrinks in the fast
pass's reduced page to a module or less a pixel: zxing neither reads nor locates it, and a
page whose other code was read would count as done (issue 19). On a rendered page such a code
still shows as what nothing else on an invoice looks like: a square of mid-grey (half its
modules dark) full of pixel-to-pixel edges. Text is mostly white at that scale, headings and
logos are too small or too flat, table fills too wide. Found in 8-pixel cells of the reduced
page, about 0.2 ms on a 2 MP invoice; only where it fires does the page get a full-size look.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import cv2
import numpy as np

from worker.engine.results import Quad

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in the searched image's pixels

_CELL = 8  # three exact 2x area halvings: a twentieth of the cost of one 8x resize
# A cell is a candidate when its mean grey and its mean edge strength are a code's: about
# half its pixels dark, and neighbouring pixels differing by 40 grey levels on average
# (text cells are whiter, logo and fill cells flatter). Measured over the digital and
# multi_digital corpora and the speed bench's pages: every code's cells pass.
_MEAN_GREY = (60, 200)
_EDGES = 40
# A dense code (version 9 and up, 53 modules or more) at 0.75 pixels a module or more is at
# least 40 pixels a side: 4 cells and more; headings and logos fill fewer.
_MIN_CELLS = 4
# A Micro QR M3 (15 modules) the reduced read missed at 1.5 pixels a module is 22 pixels: 3
# cells, the size of a logo or a bold title's letters on a rendered page. At that size a
# code's cells differ from a neighbour by 110-125 grey levels on average, logos and titles
# by 40-80 (measured on the digital, multi_digital and speed-bench pages, PDFs too: 2 of
# about 250 pages still have one at 3 cells, ruled out by the full-size look).
_SMALL_CELLS = 3
_SMALL_EDGES = 80
_MAX_ASPECT = 1.6
_MIN_FILL = 0.6
# The fewest cells a block can have: 3 by 3, filled to _MIN_FILL.
_MIN_AREA = int(np.ceil(_MIN_FILL * _SMALL_CELLS * _SMALL_CELLS))
# Past this share of the page's cells in the boxes of grey components, edges are measured
# over the whole page at once.
_WHOLE_PAGE = 0.25


def dense_squares(gray: np.ndarray, read: Sequence[Quad] = ()) -> list[Box]:
    """Square blocks of code-like texture in a reduced rendered page, largest first, but
    for blocks whose centre lies in a `read` code's quad (the searched image's pixels): the
    caller has those codes, and looking for blocks within them would cost as much again."""
    height, width = gray.shape[:2]
    rows, cols = (height - 1) // _CELL, (width - 1) // _CELL
    if rows < _SMALL_CELLS or cols < _SMALL_CELLS:
        return []
    mean = _cells(gray[: rows * _CELL, : cols * _CELL])
    grey = (mean > _MEAN_GREY[0]) & (mean < _MEAN_GREY[1])
    # A block is grey cells that also have a code's edges, so it lies within one component
    # of grey cells: edges are measured only in the rows of those big enough to hold a block
    # (a few percent of an invoice's cells: a logo, a shaded heading, the code read unless it
    # is in `read`). Across the whole page they were most of this check's cost (issue 19:
    # 0.5 ms of a 3 ms digital JPEG scan). The blocks are the same as over the whole page.
    outlines = [outline for outline in map(_Outline.of, read) if outline is not None]
    runs = [_Run(grey, top, bottom, outlines) for top, bottom in _row_runs(grey)]
    runs = [run for run in runs if run.big]
    if not runs:
        return []
    found: list[tuple[int, Box]] = []
    if sum(run.covered() for run in runs) > _WHOLE_PAGE * rows * cols:
        # Grey everywhere (a photo, a dark page): one measure of the whole page costs less.
        found = _blocks(gray, grey, 0, 0)
    else:
        for run in runs:
            for top, bottom, left, right in run.bands():
                found += _blocks(gray, run.inside(top, bottom, left, right), top, left)
    # Largest first; equal ones in the page's reading order (the bands run top to bottom).
    found.sort(key=lambda block: -block[0])
    return [box for _, box in found]


# Three or more rows in a row that hold a grey cell (bytes of 0 and 1, one a row).
_RUN = re.compile(b"\x01{%d,}" % _SMALL_CELLS)


def _row_runs(grey: np.ndarray) -> list[tuple[int, int]]:
    """The runs of cell rows (top, bottom) that each hold a grey cell, _SMALL_CELLS rows or
    more: a grey component is 4-connected, so its rows are such a run, and one big enough
    to hold a block spans _SMALL_CELLS rows or more. Most of an invoice's rows are in no
    such run, and OpenCV's component statistics cost about 8 ns a cell they label: 65 us
    over a 2 MP page's cells, 15 over its runs."""
    held = grey.any(axis=1).view(np.uint8).tobytes()
    return [match.span() for match in _RUN.finditer(held)]


class _Outline:
    """A read code's quad, convex (no other rules a block out), and its bounding box."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = points
        flat = points.ravel().tolist()
        self.left, self.right = min(flat[0::2]), max(flat[0::2])
        self.top, self.bottom = min(flat[1::2]), max(flat[1::2])

    @classmethod
    def of(cls, quad: Quad) -> _Outline | None:
        points = np.asarray(quad, np.float32).reshape(-1, 1, 2)
        return cls(points) if cv2.isContourConvex(points) else None

    def holds(self, x: int, y: int, w: int, h: int) -> bool:
        """Whether every block a grey component (bounding box `x`, `y`, `w`, `h` in cells)
        can hold has its centre inside this outline. A block is 3 cells a side or more
        within that box, so its centre is at least 1.5 cells inside it; a convex outline
        holds that inner box when it holds its corners, none of which lies outside its own
        bounding box (the test that rules out most components: a logo, a heading)."""
        x0, y0 = (x + 1.5) * _CELL, (y + 1.5) * _CELL
        x1, y1 = (x + w - 1.5) * _CELL, (y + h - 1.5) * _CELL
        if x0 < self.left or y0 < self.top or x1 > self.right or y1 > self.bottom:
            return False
        corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
        return all(cv2.pointPolygonTest(self.points, c, False) >= 0 for c in corners)


class _Run:
    """The grey components of a run of cell rows (`top` to `bottom`), and the boxes (x, y,
    w, h in the page's cells) of those big enough to hold a block and not within a read
    code, by label (`big`)."""

    def __init__(self, grey: np.ndarray, top: int, bottom: int, read: list[_Outline]) -> None:
        self.top = top
        count, self.labels, stats, _ = cv2.connectedComponentsWithStats(
            grey[top:bottom].view(np.uint8), connectivity=4
        )
        self.count = count
        self.big: dict[int, tuple[int, int, int, int]] = {}
        # A run holds a few dozen components (grey fragments of text, a logo, a code): one
        # by one in Python costs less than a dozen array operations.
        for label, (x, y, w, h, area) in enumerate(stats.tolist()):
            if label and min(w, h) >= _SMALL_CELLS and area >= _MIN_AREA:
                box = (x, y + top, w, h)
                if not any(outline.holds(*box) for outline in read):
                    self.big[label] = box

    def covered(self) -> int:
        """The cells of the big components' bounding boxes, all together."""
        return sum(w * h for _, _, w, h in self.big.values())

    def bands(self) -> list[tuple[int, int, int, int]]:
        """The row ranges (cells) the big components cover, merged, each with the columns
        (left, right) its components span: no cell of theirs lies outside them."""
        boxes = list(self.big.values())
        spans = []
        for top, bottom in _bands([y for _, y, _, _ in boxes], [y + h for _, y, _, h in boxes]):
            members = [(x, x + w) for x, y, w, _ in boxes if top <= y < bottom]
            spans.append((top, bottom, min(m[0] for m in members), max(m[1] for m in members)))
        return spans

    def inside(self, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """Which cells of the page's rows `top` to `bottom` and columns `left` to `right`
        belong to a big component."""
        big = np.zeros(self.count, bool)
        big[list(self.big)] = True
        return big[self.labels[top - self.top : bottom - self.top, left:right]]


def _bands(tops: Sequence[int], bottoms: Sequence[int]) -> list[tuple[int, int]]:
    """The row ranges (cells) the components spanning `tops` to `bottoms` cover, merged."""
    bands: list[tuple[int, int]] = []
    for top, bottom in sorted(zip(tops, bottoms, strict=True)):
        if bands and top <= bands[-1][1]:
            bands[-1] = (bands[-1][0], max(bands[-1][1], bottom))
        else:
            bands.append((top, bottom))
    return bands


def _blocks(gray: np.ndarray, inside: np.ndarray, top: int, left: int) -> list[tuple[int, Box]]:
    """The code-like blocks (area in cells, box in pixels) among the grey cells `inside`: the
    page's cell rows from `top` on and its cell columns from `left` on, as many as it has."""
    rows, cols = inside.shape
    y0, y1 = top * _CELL, (top + rows) * _CELL
    x0, x1 = left * _CELL, (left + cols) * _CELL
    base = gray[y0:y1, x0:x1]
    # The pixel right of and below each: the page has one more row and column than its cells.
    across = cv2.absdiff(gray[y0:y1, x0 + 1 : x1 + 1], base)
    down = cv2.absdiff(gray[y0 + 1 : y1 + 1, x0:x1], base)
    strength = _cells(cv2.add(across, down))
    candidate = inside & (strength > _EDGES)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        candidate.view(np.uint8), connectivity=4
    )
    # Most are text fragments, under 3 cells a side: those go at once, the rest one by one.
    sides = np.minimum(stats[1:count, 2], stats[1:count, 3])
    sums: list[float] | None = None
    blocks: list[tuple[int, Box]] = []
    for label in (np.flatnonzero(sides >= _SMALL_CELLS) + 1).tolist():
        x, y, w, h, area = stats[label].tolist()
        short, long = min(w, h), max(w, h)
        if long > _MAX_ASPECT * short or area < _MIN_FILL * w * h:
            continue
        if short == _SMALL_CELLS:
            # A block 3 cells a side must have a code's strong edges (a logo's are weaker).
            if sums is None:
                sums = np.bincount(labels.ravel(), strength.ravel(), count).tolist()
            if sums[label] / max(area, 1) < _SMALL_EDGES:
                continue
        box = ((left + x) * _CELL, (top + y) * _CELL, (left + x + w) * _CELL, (top + y + h) * _CELL)
        blocks.append((area, tuple(float(v) for v in box)))  # type: ignore[arg-type]
    return blocks


def _cells(image: np.ndarray) -> np.ndarray:
    """Mean of every 8x8 cell (the image's sides are multiples of 8)."""
    for _ in range(3):
        image = cv2.resize(
            image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA
        )
    return image
