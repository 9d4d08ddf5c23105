"""A large symbol in strong perspective that the detectors box in parts (issue 19,
qr-photos-val 60_0): no box holds its three finders, and two of them do not trace at all, one
merged with a shadow's edge and one with the caption under it. The boxes that overlap and
together look like one symbol are joined (cascade.joined); in the union the one finder that
traces and the symbol's far corner give its outline (outline.outlines, one_finder), and the
soft decoder reads it.
"""

from __future__ import annotations

import cv2
import numpy as np
import segno

from worker.engine import outline, qr
from worker.engine.cascade import joined

PAYLOAD = "I am among those who think that science has great beauty. " * 3
# Pixels a module before the perspective: the view then squeezes the top of the symbol.
MODULE_PX = 6


def steep_symbol() -> tuple[np.ndarray, np.ndarray, int]:
    """(page, the symbol's corners, its size): a version-15 H symbol seen steeply (the top
    side shorter than the bottom), a dark shadow band touching its top-right finder and a dark
    caption bar touching its bottom-left one, so only the top-left finder traces."""
    code = segno.make_qr(PAYLOAD, error="h", version=15)
    matrix = np.array([[bool(v) for v in row] for row in code.matrix], bool)
    size = matrix.shape[0]
    symbol = np.where(np.kron(matrix, np.ones((MODULE_PX, MODULE_PX), bool)), 60, 225)
    side = size * MODULE_PX
    square = np.float32([[0, 0], [side, 0], [side, side], [0, side]])
    corners = np.float32([[190, 150], [620, 175], [610, 560], [40, 500]])
    warp = cv2.getPerspectiveTransform(square, corners)
    page = cv2.warpPerspective(
        symbol.astype(np.uint8), warp, (680, 660), flags=cv2.INTER_AREA, borderValue=225
    )
    inside = cv2.warpPerspective(np.full((side, side), 255, np.uint8), warp, (680, 660))
    page = np.where(inside > 127, page, 225).astype(np.uint8)
    # The shadow's edge: a dark band along the top, touching the top-right finder's ring.
    cv2.fillConvexPoly(page, np.int32([[420, 40], [680, 60], [680, 179], [420, 164]]), 70)
    # The caption: a dark bar under the bottom-left finder, touching it.
    cv2.fillConvexPoly(page, np.int32([[0, 497], [200, 514], [200, 560], [0, 545]]), 70)
    page = cv2.GaussianBlur(page, (0, 0), 0.8)
    return page, corners.astype(np.float64), size


# The two halves the detector boxed (page pixels), as it boxed 60_0's.
LEFT_HALF = (20.0, 230.0, 450.0, 560.0)
RIGHT_HALF = (240.0, 200.0, 640.0, 560.0)


def test_overlapping_boxes_that_look_like_one_symbol_are_joined() -> None:
    assert joined([LEFT_HALF, RIGHT_HALF]) == [(20.0, 200.0, 640.0, 560.0)]


def test_boxes_of_one_place_a_strip_or_apart_are_not_joined() -> None:
    # One place boxed twice is that place, not a larger symbol.
    assert joined([(100.0, 100.0, 300.0, 300.0), (110.0, 105.0, 305.0, 310.0)]) == []
    # Apart: two symbols.
    assert joined([(0.0, 0.0, 100.0, 100.0), (200.0, 0.0, 300.0, 100.0)]) == []
    # Side by side along a line, overlapping a little: a strip, not one symbol.
    assert joined([(0.0, 0.0, 150.0, 100.0), (100.0, 0.0, 300.0, 100.0)]) == []


def test_neither_half_nor_their_union_reads_as_it_stands() -> None:
    page, _, _ = steep_symbol()
    for x0, y0, x1, y1 in (LEFT_HALF, RIGHT_HALF, *joined([LEFT_HALF, RIGHT_HALF])):
        assert qr.decode(page, ((x0, y0), (x1, y0), (x1, y1), (x0, y1))) is None
        assert outline.outlines(page, (x0, y0, x1, y1)) == []


def test_the_one_finder_and_the_far_corner_of_the_joined_boxes_give_the_outline() -> None:
    page, corners, size = steep_symbol()
    (union,) = joined([LEFT_HALF, RIGHT_HALF])
    found = outline.outlines(page, union, one_finder=True)
    assert found and found[0].size == size
    # Within a module and a half of the symbol's corners (the fit's own slack), from whichever
    # corner and either way round.
    module = float(np.linalg.norm(corners[2] - corners[3])) / size
    error = min(
        float(np.abs(np.roll(order, turn, axis=0) - corners).max())
        for order in (found[0].corners, found[0].corners[::-1])
        for turn in range(4)
    )
    assert error < 1.5 * module
    read = qr.decode(page, tuple(map(tuple, found[0].corners)))  # type: ignore[arg-type]
    assert read is not None and read.text == PAYLOAD
