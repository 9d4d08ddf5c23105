"""Quad bookkeeping shared by the renderers and the degradations.

All points use *pixel-edge* coordinates: (0, 0) is the outer corner of the
top-left pixel and pixel (i, j) covers [i, i+1] x [j, j+1].  zxing-cpp reports
symbol corners the same way, so ground truth compares against it directly.
OpenCV's warps work on pixel *centres*, hence the half-pixel shifts below.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

Quad = tuple[tuple[float, float], ...]
"""Four (x, y) corners: the symbol's own top-left, top-right, bottom-right, bottom-left."""

Quads = npt.NDArray[np.float64]
"""Array of shape (n, 4, 2) holding n quads, used while images are transformed."""


def as_quads(quads: npt.ArrayLike) -> Quads:
    return np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)


def to_quad(points: npt.ArrayLike) -> Quad:
    arr = np.asarray(points, dtype=np.float64).reshape(4, 2)
    return tuple((float(x), float(y)) for x, y in arr)


def apply_affine(quads: Quads, matrix: npt.NDArray[np.float64]) -> Quads:
    """Map quads through a 2x3 matrix given in OpenCV's pixel-centre convention."""
    if len(quads) == 0:
        return quads
    pts = quads.reshape(-1, 2) - 0.5
    out = pts @ matrix[:, :2].T + matrix[:, 2]
    return (out + 0.5).reshape(quads.shape)


def apply_homography(quads: Quads, matrix: npt.NDArray[np.float64]) -> Quads:
    """Map quads through a 3x3 matrix given in OpenCV's pixel-centre convention."""
    if len(quads) == 0:
        return quads
    pts = quads.reshape(-1, 2) - 0.5
    homog = np.hstack([pts, np.ones((len(pts), 1))]) @ matrix.T
    out = homog[:, :2] / homog[:, 2:3]
    return (out + 0.5).reshape(quads.shape)


def rotation_matrix(
    width: int, height: int, angle_deg: float
) -> tuple[npt.NDArray[np.float64], int, int]:
    """Affine matrix rotating an image counter-clockwise on an enlarged canvas.

    The canvas grows so nothing is clipped, which keeps every ground-truth
    corner inside the output image.
    """
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle_deg, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w = int(np.ceil(width * cos + height * sin))
    new_h = int(np.ceil(width * sin + height * cos))
    matrix[0, 2] += (new_w - 1) / 2.0 - centre[0]
    matrix[1, 2] += (new_h - 1) / 2.0 - centre[1]
    return matrix, new_w, new_h


def rot90_quads(quads: Quads, width: int, height: int, turns: int) -> Quads:
    """Follow ``np.rot90(image, turns)`` (counter-clockwise quarter turns)."""
    out = quads.copy()
    w, h = width, height
    for _ in range(turns % 4):
        x, y = out[..., 0].copy(), out[..., 1].copy()
        out[..., 0], out[..., 1] = y, w - x
        w, h = h, w
    return out
