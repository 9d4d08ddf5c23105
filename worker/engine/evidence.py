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
    _, labels, stats, _ = cv2.connectedComponentsWithStats(grey.view(np.uint8), connectivity=4)
    sides, area = np.minimum(stats[:, 2], stats[:, 3]), stats[:, 4]
    big = (sides >= _SMALL_CELLS) & (area >= _MIN_AREA)
    big[0] = False  # the background
    for quad in read:
        outline = np.asarray(quad, np.float32).reshape(-1, 1, 2)
        if cv2.isContourConvex(outline):
            for label in np.flatnonzero(big):
                if _within(outline, *(int(v) for v in stats[label, :4])):
                    big[label] = False
    if not big.any():
        return []
    if stats[big, 2] @ stats[big, 3] > _WHOLE_PAGE * rows * cols:
        # Grey everywhere (a photo, a dark page): one measure of the whole page costs less.
        bands, inside = [(0, rows)], grey
    else:
        bands, inside = _bands(stats[big, 1], stats[big, 1] + stats[big, 3]), big[labels]
    found: list[tuple[int, Box]] = []
    for top, bottom in bands:
        found += _blocks(gray, inside[top:bottom], top)
    # Largest first; equal ones in the page's reading order (the bands run top to bottom).
    found.sort(key=lambda block: -block[0])
    return [box for _, box in found]


def _within(outline: np.ndarray, x: int, y: int, w: int, h: int) -> bool:
    """Whether every block a grey component (bounding box `x`, `y`, `w`, `h` in cells) can
    hold has its centre inside `outline`. A block is 3 cells a side or more within that box,
    so its centre is at least 1.5 cells inside it; a convex outline holds that inner box
    when it holds its corners."""
    x0, y0 = (x + 1.5) * _CELL, (y + 1.5) * _CELL
    x1, y1 = (x + w - 1.5) * _CELL, (y + h - 1.5) * _CELL
    corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    return all(cv2.pointPolygonTest(outline, corner, False) >= 0 for corner in corners)


def _bands(tops: np.ndarray, bottoms: np.ndarray) -> list[tuple[int, int]]:
    """The row ranges (cells) the components spanning `tops` to `bottoms` cover, merged."""
    bands: list[tuple[int, int]] = []
    for top, bottom in sorted(zip(tops.tolist(), bottoms.tolist(), strict=True)):
        if bands and top <= bands[-1][1]:
            bands[-1] = (bands[-1][0], max(bands[-1][1], bottom))
        else:
            bands.append((top, bottom))
    return bands


def _blocks(gray: np.ndarray, inside: np.ndarray, top: int) -> list[tuple[int, Box]]:
    """The code-like blocks (area in cells, box in pixels) among the grey cells `inside`: the
    page's cell rows from `top` on, as many as it has, all its columns."""
    rows, cols = inside.shape
    y0, y1, x1 = top * _CELL, (top + rows) * _CELL, cols * _CELL
    base = gray[y0:y1, :x1]
    # The pixel right of and below each: the page has one more row and column than its cells.
    across = cv2.absdiff(gray[y0:y1, 1 : x1 + 1], base)
    down = cv2.absdiff(gray[y0 + 1 : y1 + 1, :x1], base)
    strength = _cells(cv2.add(across, down))
    candidate = inside & (strength > _EDGES)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        candidate.view(np.uint8), connectivity=4
    )
    x, y, bw, bh, area = stats[1:count].T  # most are text fragments: filtered at once
    short, long = np.minimum(bw, bh), np.maximum(bw, bh)
    edges_mean = np.bincount(labels.ravel(), strength.ravel(), count)[1:] / np.maximum(area, 1)
    sized = (short >= _MIN_CELLS) | ((short == _SMALL_CELLS) & (edges_mean >= _SMALL_EDGES))
    keep = sized & (long <= _MAX_ASPECT * short) & (area >= _MIN_FILL * bw * bh)
    return [
        (
            a,
            (
                float(x0 * _CELL),
                float((top + y0) * _CELL),
                float((x0 + w0) * _CELL),
                float((top + y0 + h0) * _CELL),
            ),
        )
        for x0, y0, w0, h0, a in zip(
            x[keep].tolist(),
            y[keep].tolist(),
            bw[keep].tolist(),
            bh[keep].tolist(),
            area[keep].tolist(),
            strict=True,
        )
    ]


def _cells(image: np.ndarray) -> np.ndarray:
    """Mean of every 8x8 cell (the image's sides are multiples of 8)."""
    for _ in range(3):
        image = cv2.resize(
            image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA
        )
    return image
