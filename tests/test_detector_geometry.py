"""The detector's numpy half: letterboxing, corner order, decoding the network's maps,
and rectifying a detected quad into a crop zxing reads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segno

from worker.engine import rectify, zxing_reader
from worker.engine.detector.geometry import (
    STRIDE,
    box_iou,
    canonical_corners,
    decode,
    letterbox,
)


def test_letterbox_shrinks_to_fit_pads_grey_and_reports_its_scale() -> None:
    page = np.zeros((1000, 500), np.uint8)
    boxed = letterbox(page, 384)
    assert boxed.tensor.shape == (1, 1, 384, 384)
    assert boxed.tensor.dtype == np.float32
    assert boxed.scale == pytest.approx(0.384)
    assert boxed.tensor[0, 0, 10, 10] == 0.0  # the page
    assert boxed.tensor[0, 0, 10, 300] == 0.5  # the padding, right of the page


def test_letterbox_never_enlarges_a_small_page() -> None:
    boxed = letterbox(np.full((100, 200), 255, np.uint8), 384)
    assert boxed.scale == 1.0
    assert boxed.tensor[0, 0, 99, 199] == 1.0


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_corner_order_depends_on_the_image_not_on_how_the_corners_were_listed(
    shift: int,
) -> None:
    square = np.array([[10, 10], [90, 12], [88, 92], [8, 90]], np.float32)
    listed = np.roll(square, shift, axis=0)
    assert np.array_equal(canonical_corners(listed), square)
    assert np.array_equal(canonical_corners(listed[::-1]), square)


def maps(size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros((1, 1, size, size), np.float32),
        np.zeros((1, 4, size, size), np.float32),
        np.zeros((1, 8, size, size), np.float32),
    )


def put(heat, box, corners, row: int, col: int, score: float, half: float) -> None:
    heat[0, 0, row, col] = score
    box[0, :, row, col] = half
    corners[0, :, row, col] = [-half, -half, half, -half, half, half, -half, half]


def test_decode_turns_a_peak_into_a_box_and_quad_in_page_pixels() -> None:
    heat, box, corners = maps()
    put(heat, box, corners, row=5, col=7, score=0.9, half=10.0)
    (found,) = decode(heat, box, corners, scale=0.5)
    cx, cy = (7 + 0.5) * STRIDE / 0.5, (5 + 0.5) * STRIDE / 0.5
    assert found.score == pytest.approx(0.9)
    assert found.box == pytest.approx((cx - 20, cy - 20, cx + 20, cy + 20))
    assert found.quad[0] == pytest.approx((cx - 20, cy - 20))
    assert found.quad[2] == pytest.approx((cx + 20, cy + 20))


def test_decode_keeps_separate_codes_and_suppresses_overlapping_duplicates() -> None:
    heat, box, corners = maps()
    put(heat, box, corners, row=5, col=5, score=0.9, half=12.0)
    put(heat, box, corners, row=5, col=7, score=0.6, half=12.0)  # same code, weaker peak
    put(heat, box, corners, row=25, col=25, score=0.5, half=12.0)  # another code
    put(heat, box, corners, row=15, col=15, score=0.1, half=12.0)  # below the threshold
    found = decode(heat, box, corners, scale=1.0, threshold=0.3)
    assert [round(d.score, 1) for d in found] == [0.9, 0.5]


def test_box_iou() -> None:
    iou = box_iou(
        np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    )
    assert iou[0] == pytest.approx([1.0, 1 / 3, 0.0])


def tilted_code(text: str) -> tuple[np.ndarray, np.ndarray]:
    """A code photographed at an angle: the page and the code's true corners on it."""
    code = np.array(segno.make(text, error="m").matrix, np.uint8)
    flat = cv2.resize((1 - code) * 255, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)
    side = flat.shape[0]
    flat = cv2.copyMakeBorder(flat, 32, 32, 32, 32, cv2.BORDER_CONSTANT, value=255)
    source = np.float32([[32, 32], [32 + side, 32], [32 + side, 32 + side], [32, 32 + side]])
    corners = np.float32([[140, 90], [400, 140], [380, 420], [100, 380]])
    warp = cv2.getPerspectiveTransform(
        np.float32(
            [[0, 0], [flat.shape[1], 0], [flat.shape[1], flat.shape[0]], [0, flat.shape[0]]]
        ),
        np.float32(rectify.expand(corners, 32 / side)),
    )
    page = cv2.warpPerspective(flat, warp, (520, 520), borderValue=255)
    return page, cv2.perspectiveTransform(source[None], warp)[0]


def test_a_rectified_crop_reads_and_its_corners_map_back_onto_the_page() -> None:
    page, corners = tilted_code("INVOICE 2026-0042")
    crop, mapping = rectify.rectify(page, corners, scale=1.0)
    assert crop.shape[0] == crop.shape[1] >= rectify.MIN_SIDE
    symbols = [s for s in zxing_reader.read(crop, mapping) if s.valid]
    assert [s.text for s in symbols] == ["INVOICE 2026-0042"]
    mapped = np.array(symbols[0].quad)
    # zxing's corners start at the code's own top-left; compare as sets of points.
    distances = np.linalg.norm(mapped[:, None, :] - corners[None, :, :], axis=2).min(axis=1)
    assert distances.max() < 6.0


def test_the_perspective_map_inverts_the_crop_warp() -> None:
    page, corners = tilted_code("x")
    crop, mapping = rectify.rectify(page, corners, scale=0.5)
    expanded = rectify.expand(corners)
    side = crop.shape[0]
    assert mapping.to_page(0, 0) == pytest.approx(tuple(expanded[0] / 0.5), abs=1e-3)
    assert mapping.to_page(side, side) == pytest.approx(tuple(expanded[2] / 0.5), abs=1e-3)
