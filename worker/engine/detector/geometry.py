"""The numpy half of the detector, shared by both runtimes and by training's evaluation.

`letterbox` turns a grayscale page into the network's square input; `decode` turns the
network's three maps (see `worker.engine.detector.net`) into detections in page pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from worker.engine.detector.configs import STRIDE

# Neutral grey for the padding: no edges, so no false centres along the border.
PAD_VALUE = 0.5


@dataclass(frozen=True, slots=True)
class Letterbox:
    """The network input and how to map its pixels back to the page's."""

    tensor: np.ndarray  # float32 [1, 1, S, S], 0..1
    scale: float  # input pixels per page pixel


@dataclass(frozen=True, slots=True)
class Detection:
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in page pixels
    quad: np.ndarray  # float32 [4, 2], page pixels, canonical corner order


def letterbox(gray: np.ndarray, size: int) -> Letterbox:
    """Scale the page to fit `size` (never up: small pages keep their pixels) and pad
    the bottom and right, so input pixel (x, y) is page pixel (x, y) / scale."""
    height, width = gray.shape[:2]
    scale = min(1.0, size / max(height, width))
    if scale < 1.0:
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, new_size, interpolation=cv2.INTER_AREA)
    canvas = np.full((size, size), PAD_VALUE, np.float32)
    canvas[: gray.shape[0], : gray.shape[1]] = gray.astype(np.float32) * (1.0 / 255.0)
    return Letterbox(canvas[None, None], scale)


def canonical_corners(points: np.ndarray) -> np.ndarray:
    """Order four corners the way the network learns them: clockwise (in image
    coordinates) starting from the corner with the smallest x + y.

    A QR code's own orientation is unknown until it is read, so the order is defined
    by the image alone; zxing reads the rectified crop in any rotation anyway.
    """
    points = np.asarray(points, np.float32).reshape(4, 2)
    centre = points.mean(axis=0)
    angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    clockwise = points[np.argsort(angles)]  # y points down: increasing angle is clockwise
    start = int(np.argmin(clockwise.sum(axis=1)))
    return np.roll(clockwise, -start, axis=0)


def decode(
    heat: np.ndarray,
    box: np.ndarray,
    corners: np.ndarray,
    scale: float,
    *,
    threshold: float = 0.3,
    top_k: int = 32,
    nms_iou: float = 0.5,
) -> list[Detection]:
    """Peaks of the heat map above `threshold` (3x3 local maxima), best first, with
    overlapping boxes suppressed; coordinates divided by `scale` into page pixels."""
    h = np.ascontiguousarray(heat[0, 0], np.float32)
    peaks = (h >= cv2.dilate(h, np.ones((3, 3), np.uint8))) & (h >= threshold)
    ys, xs = np.nonzero(peaks)
    if len(ys) == 0:
        return []
    scores = h[ys, xs]
    order = np.argsort(-scores)[:top_k]
    ys, xs, scores = ys[order], xs[order], scores[order]
    cx = (xs + 0.5) * STRIDE
    cy = (ys + 0.5) * STRIDE
    ltrb = box[0][:, ys, xs]
    boxes = np.stack((cx - ltrb[0], cy - ltrb[1], cx + ltrb[2], cy + ltrb[3]), axis=1) / scale
    offsets = corners[0][:, ys, xs].T.reshape(-1, 4, 2)
    quads = (offsets + np.stack((cx, cy), axis=1)[:, None, :]) / scale
    keep = _nms(boxes, nms_iou)
    return [
        Detection(float(scores[i]), tuple(float(v) for v in boxes[i]), quads[i].astype(np.float32))
        for i in keep
    ]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] against every box in `b` [M, 4] (x0, y0, x1, y1)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _nms(boxes: np.ndarray, iou: float) -> list[int]:
    keep: list[int] = []
    for i in range(len(boxes)):  # already sorted by score
        if not keep or box_iou(boxes[i : i + 1], boxes[keep]).max() < iou:
            keep.append(i)
    return keep
