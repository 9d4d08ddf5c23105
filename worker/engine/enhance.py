"""Image variants that turn a hard photo into one zxing can read.

Each is cheap on its own; the thorough stage tries them in order of how often they
help, so the common failure modes (soft focus, flat contrast, uneven light, sensor
noise) are covered before the rare ones.
"""

from __future__ import annotations

import cv2
import numpy as np


def unsharp(gray: np.ndarray) -> np.ndarray:
    blurred = cv2.GaussianBlur(gray, (0, 0), sigmaX=2.0)
    return cv2.addWeighted(gray, 1.8, blurred, -0.8, 0)


def clahe(gray: np.ndarray) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(gray)


def local_threshold(gray: np.ndarray) -> np.ndarray:
    # The window must span several modules yet stay local enough to follow a shadow edge.
    block = max(15, (min(gray.shape[:2]) // 40) | 1)
    return cv2.adaptiveThreshold(
        gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, 7
    )


def denoise(gray: np.ndarray) -> np.ndarray:
    return cv2.medianBlur(gray, 3)


def upscale(gray: np.ndarray, factor: float = 2.0) -> np.ndarray:
    return cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)


def tiles(shape: tuple[int, ...], size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping (x, y, w, h) windows covering an image; overlap exceeds any code we
    expect to be small enough to need tiling, so no code is cut by every window."""
    height, width = shape[:2]
    step = max(1, size - overlap)

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        points = list(range(0, length - size, step))
        points.append(length - size)
        return points

    return [
        (x, y, min(size, width - x), min(size, height - y))
        for y in starts(height)
        for x in starts(width)
    ]
