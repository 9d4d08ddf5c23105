"""The cheapest evidence that a rendered page holds a code the reduced pass did not see.

A dense code printed small (a payment record at 0.3-0.45 mm a module) shrinks in the fast
pass's reduced page to a module or less a pixel: zxing neither reads nor locates it, and a
page whose other code was read would count as done (issue 19). On a rendered page such a code
still shows as what nothing else on an invoice looks like: a square of mid-grey (half its
modules dark) full of pixel-to-pixel edges. Text is mostly white at that scale, headings and
logos are too small or too flat, table fills too wide. Found in 8-pixel cells of the reduced
page, about 0.15 ms on a 2 MP invoice inside a scan (its first halving, shared with
fast.rendered, not counted); only where it fires does the page get a full-size look.
"""

from __future__ import annotations

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


def dense_squares(
    gray: np.ndarray, read: Sequence[Quad] = (), half: np.ndarray | None = None
) -> list[Box]:
    """Square blocks of code-like texture in a reduced rendered page, largest first, but
    for blocks whose centre lies in a `read` code's quad (the searched image's pixels): the
    caller has those codes, and looking for blocks within them would cost as much again.
    `half` is the page's halve(gray) where the caller has it."""
    height, width = gray.shape[:2]
    rows, cols = (height - 1) // _CELL, (width - 1) // _CELL
    if rows < _SMALL_CELLS or cols < _SMALL_CELLS:
        return []
    # Each cell's edge threshold: a code's where its mean grey is a code's, none elsewhere.
    # One table lookup, and one comparison a band later: the grey mask and the edge test in
    # one (issue 19: on a digital page every OpenCV or numpy call costs a few microseconds
    # after zxing-cpp's pass, whatever its size, and this check is a dozen of them).
    if half is None:
        half = _halved(gray[: rows * _CELL, : cols * _CELL])
    limit = cv2.LUT(_halved(_halved(half)), _LIMITS)
    cells = limit.tobytes()
    runs = _row_runs(cells, rows, cols)
    if not runs:
        return []
    outlines = [_Outline(quad) for quad in read]
    # A block is grey cells that also have a code's edges, so it lies within one component
    # of grey cells, and within the rows of one run. Edges are measured only in the runs: a
    # few percent of an invoice's cells (a logo, a shaded heading; across the whole page they
    # were most of this check's cost, issue 19). A run no read code reaches is measured whole,
    # unlabelled: a component too small to hold a block holds none of its blocks either. One a
    # read code reaches is left out where the code holds all its grey cells, and labelled
    # otherwise, so that the components the code holds are left out (the code's own texture).
    measured: list[tuple[int, int] | _Run] = []
    left_out = False
    for top, bottom in runs:
        near = [outline for outline in outlines if outline.reaches(top, bottom)]
        if not near:
            measured.append((top, bottom))
        elif any(outline.covers(cells, cols, top, bottom) for outline in near):
            left_out = True
        else:
            run = _Run(limit, top, bottom, outlines)
            left_out = left_out or bool(run.left_out)
            if run.big:
                measured.append(run)
    if not measured:
        return []
    whole = _WHOLE_PAGE * rows * cols
    # Past that share of the page in the boxes of big components, one measure of the whole
    # page costs less (a photo, a dark page); it keeps blocks a read code holds, as it always
    # did. Where nothing was left out the two give the same blocks, so the runs' own cells
    # bound the share; otherwise the share is taken as before, from every run's components.
    if sum(_cells_of(run, cols) for run in measured) > whole:
        if left_out:
            labelled = [
                _Run(limit, *run, []) if isinstance(run, tuple) else run for run in measured
            ]
            measured = [run for run in labelled if run.big]
        if not left_out or sum(run.covered() for run in measured) > whole:  # type: ignore[union-attr]
            measured = [(0, rows)]
            limit = limit[:rows]
    found: list[tuple[int, Box]] = []
    for run in measured:
        if isinstance(run, tuple):
            top, bottom = run
            found += _blocks(gray, limit[top:bottom], top, 0)
        else:
            for top, bottom, left, right in run.bands():
                found += _blocks(gray, run.limit(limit, top, bottom, left, right), top, left)
    # Largest first; equal ones in the page's reading order (the runs run top to bottom).
    found.sort(key=lambda block: -block[0])
    return [box for _, box in found]


# The threshold a cell's edge strength must pass, by its mean grey: _EDGES where the mean is
# a code's (about half its pixels dark), 255 (past any cell's mean) elsewhere.
_LIMITS = np.full(256, 255, np.uint8)
_LIMITS[_MEAN_GREY[0] + 1 : _MEAN_GREY[1]] = _EDGES
_NONE = 255
# Three rows in a row that hold a grey cell (bytes of 0 and 1, one a row), and a row that holds
# none: bytes.find costs a tenth of a regular expression's scan of a page's hundred rows.
_THREE, _EMPTY = b"\x01" * _SMALL_CELLS, b"\x00"
_GREY = bytes([_EDGES])  # a grey cell's threshold
# A grey cell's threshold to 255, any other to 0: the grey cells as OpenCV labels them.
_GREY_CELLS = np.where(np.arange(256) == _EDGES, 255, 0).astype(np.uint8)


def _row_runs(cells: bytes, rows: int, cols: int) -> list[tuple[int, int]]:
    """The runs of cell rows (top, bottom) that each hold a grey cell, _SMALL_CELLS rows or
    more: a grey component is 4-connected, so its rows are such a run, and one big enough
    to hold a block spans _SMALL_CELLS rows or more. Most of an invoice's rows are in no
    such run. `cells` are the page's edge thresholds, a byte a cell, row after row: the
    search skips to the next row at each grey cell it finds (bytes.find, a few dozen calls
    on an invoice, less than one OpenCV or numpy call costs after zxing-cpp's pass)."""
    held = bytearray(rows)
    found = cells.find(_GREY)
    while found >= 0:
        row = found // cols
        held[row] = 1
        found = cells.find(_GREY, (row + 1) * cols)
    return _spans(held, _THREE)


def _spans(held: bytes | bytearray, start: bytes) -> list[tuple[int, int]]:
    """The runs of 1 bytes in `held` that begin with `start` (start, end)."""
    spans = []
    top = held.find(start)
    while top >= 0:
        bottom = held.find(_EMPTY, top)
        if bottom < 0:
            bottom = len(held)
        spans.append((top, bottom))
        top = held.find(start, bottom)
    return spans


def _cells_of(run: tuple[int, int] | _Run, cols: int) -> int:
    """At least the cells of a run's big components' boxes: all its cells if unlabelled."""
    return (run[1] - run[0]) * cols if isinstance(run, tuple) else run.covered()


class _Outline:
    """A read code's quad and its bounding box, widened by a hair: the box only rules out,
    the exact test is OpenCV's on the quad's float32 points (convex: no other rules out)."""

    def __init__(self, quad: Quad) -> None:
        self.quad = [(float(x), float(y)) for x, y in quad]
        xs, ys = [x for x, _ in self.quad], [y for _, y in self.quad]
        self.left, self.right = min(xs) - _HAIR, max(xs) + _HAIR
        self.top, self.bottom = min(ys) - _HAIR, max(ys) + _HAIR
        self._points: np.ndarray | None = None
        self._convex = False

    def reaches(self, top: int, bottom: int) -> bool:
        """Whether a component within cell rows `top` to `bottom` could be held (see holds):
        one 3 cells high or more, its rows from 1.5 cells in within the box's."""
        return (top + 1.5) * _CELL <= self.bottom and (bottom - 1.5) * _CELL >= self.top

    def covers(self, cells: bytes, cols: int, top: int, bottom: int) -> bool:
        """Whether this outline holds every component of the run of rows `top` to `bottom`:
        the box of the run's grey cells, 1.5 cells in (as holds takes a component's) and
        half a pixel out, lies strictly inside the quad. A component's box lies within the
        run's, so its inner box within that one, inside the quad too."""
        y0, y1 = (top + 1.5) * _CELL - _MARGIN, (bottom - 1.5) * _CELL + _MARGIN
        if y0 < self.top or y1 > self.bottom:
            return False
        first, last = cols, 0  # every row of a run holds a grey cell
        for start in range(top * cols, bottom * cols, cols):
            first = min(first, cells.find(_GREY, start, start + cols) - start)
            last = max(last, cells.rfind(_GREY, start, start + cols) - start)
        x0, x1 = (first + 1.5) * _CELL - _MARGIN, (last - 0.5) * _CELL + _MARGIN
        if x0 < self.left or x1 > self.right:
            return False
        return _strictly_inside(self.quad, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))

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
        if self._points is None:
            self._points = np.asarray(self.quad, np.float32).reshape(-1, 1, 2)
            self._convex = bool(cv2.isContourConvex(self._points))
        if not self._convex:
            return False
        corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
        return all(cv2.pointPolygonTest(self._points, c, False) >= 0 for c in corners)


# The widening of a quad's box (pixels): more than float32 rounds a coordinate by, below
# 16384. And the margin by which covers keeps a run's inner box off the quad's sides.
_HAIR = 1e-3
_MARGIN = 0.5


def _strictly_inside(
    quad: Sequence[tuple[float, float]], points: Sequence[tuple[float, float]]
) -> bool:
    """Whether the quad is strictly convex and every point lies strictly inside it: on the
    same side of each of its sides as its corners turn."""
    sign = 0.0
    for i, (ax, ay) in enumerate(quad):
        bx, by = quad[(i + 1) % len(quad)]
        cx, cy = quad[(i + 2) % len(quad)]
        for px, py in ((cx, cy), *points):
            cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
            if cross == 0.0 or (sign != 0.0 and (cross > 0.0) != (sign > 0.0)):
                return False
            sign = cross
    return True


class _Run:
    """The grey components of a run of cell rows (`top` to `bottom`): the boxes (x, y, w,
    h in the page's cells) of those big enough to hold a block and not within a read code,
    by label (`big`), and of those within one (`left_out`)."""

    def __init__(self, limit: np.ndarray, top: int, bottom: int, read: list[_Outline]) -> None:
        self.top = top
        grey = cv2.LUT(limit[top:bottom], _GREY_CELLS)
        count, self.labels, stats, _ = cv2.connectedComponentsWithStats(grey, connectivity=4)
        self.count = count
        self.big: dict[int, tuple[int, int, int, int]] = {}
        self.left_out: list[tuple[int, int, int, int]] = []
        # A run holds a few dozen components (grey fragments of text, a logo, a code): one
        # by one in Python costs less than a dozen array operations.
        for label, (x, y, w, h, area) in enumerate(stats.tolist()):
            if label and min(w, h) >= _SMALL_CELLS and area >= _MIN_AREA:
                box = (x, y + top, w, h)
                if any(outline.holds(*box) for outline in read):
                    self.left_out.append(box)
                else:
                    self.big[label] = box

    def covered(self) -> int:
        """The cells of the big components' boxes, all together."""
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

    def limit(self, limit: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """The edge thresholds of the page's rows `top` to `bottom` and columns `left` to
        `right`, none where a left-out component lies (the page's own elsewhere: the other
        grey cells there hold no block)."""
        if not any(
            x < right and x + w > left and y < bottom and y + h > top
            for x, y, w, h in self.left_out
        ):
            return limit[top:bottom, left:right]
        thresholds = np.full(self.count, _NONE, np.uint8)
        thresholds[list(self.big)] = _EDGES
        return thresholds[self.labels[top - self.top : bottom - self.top, left:right]]


def _bands(tops: Sequence[int], bottoms: Sequence[int]) -> list[tuple[int, int]]:
    """The row ranges (cells) the components spanning `tops` to `bottoms` cover, merged."""
    bands: list[tuple[int, int]] = []
    for top, bottom in sorted(zip(tops, bottoms, strict=True)):
        if bands and top <= bands[-1][1]:
            bands[-1] = (bands[-1][0], max(bands[-1][1], bottom))
        else:
            bands.append((top, bottom))
    return bands


# Past this many components (a photo's whole page), the small ones go at once, not one by one.
_SCREEN = 64


def _blocks(gray: np.ndarray, limit: np.ndarray, top: int, left: int) -> list[tuple[int, Box]]:
    """The code-like blocks (area in cells, box in pixels) among the page's cell rows from
    `top` on and cell columns from `left` on, as many as `limit` (their edge thresholds)
    has: the cells whose edge strength passes it."""
    rows, cols = limit.shape
    y0, y1 = top * _CELL, (top + rows) * _CELL
    x0, x1 = left * _CELL, (left + cols) * _CELL
    base = gray[y0:y1, x0:x1]
    # The pixel right of and below each: the page has one more row and column than its cells.
    across = cv2.absdiff(gray[y0:y1, x0 + 1 : x1 + 1], base)
    down = cv2.absdiff(gray[y0 + 1 : y1 + 1, x0:x1], base)
    strength = _cells(cv2.add(across, down))
    candidate = cv2.compare(strength, limit, cv2.CMP_GT)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidate, connectivity=4)
    if count > _SCREEN:
        sides = np.minimum(stats[1:count, 2], stats[1:count, 3])
        listed = [
            (label, stats[label].tolist())
            for label in (np.flatnonzero(sides >= _SMALL_CELLS) + 1).tolist()
        ]
    else:
        listed = list(enumerate(stats.tolist()))[1:]
    sums: list[float] | None = None
    blocks: list[tuple[int, Box]] = []
    for label, (x, y, w, h, area) in listed:
        short, long = min(w, h), max(w, h)
        if short < _SMALL_CELLS or long > _MAX_ASPECT * short or area < _MIN_FILL * w * h:
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


def halve(gray: np.ndarray) -> np.ndarray | None:
    """The first of the halvings that give a page's cells (the mean of each 2x2 pixels of
    its whole cells, rounded), None for a page under a cell a side: the one pass over the
    page that both this evidence and fast.rendered read it for (issue 19)."""
    height, width = gray.shape[:2]
    rows, cols = (height - 1) // _CELL, (width - 1) // _CELL
    if rows < 1 or cols < 1:
        return None
    return _halved(gray[: rows * _CELL, : cols * _CELL])


def _cells(image: np.ndarray) -> np.ndarray:
    """Mean of every 8x8 cell (the image's sides are multiples of 8)."""
    return _halved(_halved(_halved(image)))


def _halved(image: np.ndarray) -> np.ndarray:
    """The mean of each 2x2 pixels, rounded: (sum + 2) // 4, OpenCV's area resize."""
    return cv2.resize(
        image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA
    )
