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

import cv2
import numpy as np

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


def dense_squares(gray: np.ndarray) -> list[Box]:
    """Square blocks of code-like texture in a reduced rendered page, largest first."""
    height, width = gray.shape[:2]
    rows, cols = (height - 1) // _CELL, (width - 1) // _CELL
    if rows < _SMALL_CELLS or cols < _SMALL_CELLS:
        return []
    h, w = rows * _CELL, cols * _CELL
    base = gray[:h, :w]
    edges = cv2.add(cv2.absdiff(gray[:h, 1 : w + 1], base), cv2.absdiff(gray[1 : h + 1, :w], base))
    mean, strength = _cells(base), _cells(edges)
    candidate = (mean > _MEAN_GREY[0]) & (mean < _MEAN_GREY[1]) & (strength > _EDGES)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        candidate.astype(np.uint8), connectivity=4
    )
    x, y, bw, bh, area = stats[1:count].T  # most are text fragments: filtered at once
    short, long = np.minimum(bw, bh), np.maximum(bw, bh)
    edges_mean = (np.bincount(labels.ravel(), strength.ravel(), count) / stats[:, 4])[1:]
    sized = (short >= _MIN_CELLS) | ((short == _SMALL_CELLS) & (edges_mean >= _SMALL_EDGES))
    keep = sized & (long <= _MAX_ASPECT * short) & (area >= _MIN_FILL * bw * bh)
    order = np.argsort(-area[keep], kind="stable")
    return [
        (float(x0 * _CELL), float(y0 * _CELL), float((x0 + w0) * _CELL), float((y0 + h0) * _CELL))
        for x0, y0, w0, h0 in np.stack([x, y, bw, bh], axis=1)[keep][order]
    ]


def _cells(image: np.ndarray) -> np.ndarray:
    """Mean of every 8x8 cell (the image's sides are multiples of 8)."""
    for _ in range(3):
        image = cv2.resize(
            image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA
        )
    return image
