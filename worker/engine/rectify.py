"""Cutting a detected code out of the page as an upright square, and mapping back.

zxing finds finder patterns most reliably in a crop where the code is square, fills
most of the frame and has a few modules of quiet zone; a perspective warp from the
detector's four corners gives exactly that, whatever the camera angle was.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Margin around the quad, as a share of its size: a quiet zone for zxing, and slack
# for corners the detector placed a little inside the symbol.
MARGIN = 0.18
# Crop sides: large enough for a version-25 code at 3 pixels per module, and never
# so large that decoding one crop costs more than a thorough page pass.
MIN_SIDE = 320
MAX_SIDE = 1200
# Closing kernel for `outline`, as a share of the crop's side.
_OUTLINE_CLOSE = 0.06


@dataclass(frozen=True, slots=True)
class Perspective:
    """Maps a crop pixel back onto the page: page = warp^-1(p) / scale."""

    inverse: np.ndarray  # 3x3, crop -> working image
    scale: float  # working-image pixels per page pixel

    def to_page(self, x: float, y: float) -> tuple[float, float]:
        u, v, w = self.inverse @ np.array((x, y, 1.0))
        return (float(u / w / self.scale), float(v / w / self.scale))


def expand(quad: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    centre = quad.mean(axis=0)
    return centre + (quad - centre) * (1.0 + 2.0 * margin)


def side_length(quad: np.ndarray) -> float:
    return float(np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1).mean())


def rectify(gray: np.ndarray, quad: np.ndarray, scale: float) -> tuple[np.ndarray, Perspective]:
    """The square crop of `quad` (corners in `gray` pixels, clockwise from top-left)."""
    source = expand(np.asarray(quad, np.float32)).astype(np.float32)
    side = int(np.clip(side_length(source), MIN_SIDE, MAX_SIDE))
    target = np.array([[0, 0], [side, 0], [side, side], [0, side]], np.float32)
    warp = cv2.getPerspectiveTransform(source, target)
    crop = cv2.warpPerspective(
        gray, warp, (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    return crop, Perspective(np.linalg.inv(warp), scale)


def box_crop(
    gray: np.ndarray, box: tuple[float, float, float, float], scale: float
) -> tuple[np.ndarray, Perspective]:
    """The axis-aligned box with a margin, scaled to a workable size: the fallback when
    the corners are poor (a torn or bent code) but the box is right."""
    x0, y0, x1, y1 = box
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    return rectify(gray, quad, scale)


def outline(crop: np.ndarray) -> np.ndarray | None:
    """The four corners of the code in a crop where it is the central dark blob, or None.

    The detector's corner head was trained on mildly tilted pages; on a steep view its
    corners can be a tenth of the side off, and a crop warped from them is not square
    enough for zxing. Closing the modules into one solid blob and fitting a quadrilateral
    to its hull recovers the outline from the pixels themselves.
    """
    height, width = crop.shape[:2]
    _, dark = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    # Wider than a light run of modules inside the code, narrower than its quiet zone.
    size = max(3, int(min(height, width) * _OUTLINE_CLOSE)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    solid = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, kernel)
    solid = cv2.morphologyEx(solid, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(solid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    centre = (width / 2.0, height / 2.0)
    central = [
        c
        for c in contours
        if cv2.contourArea(c) >= 0.1 * height * width
        and cv2.pointPolygonTest(c, centre, False) >= 0
    ]
    if not central:
        return None
    hull = cv2.convexHull(max(central, key=cv2.contourArea))
    perimeter = cv2.arcLength(hull, True)
    for tolerance in (0.02, 0.04, 0.06, 0.08, 0.1):
        corners = cv2.approxPolyDP(hull, tolerance * perimeter, True)
        if len(corners) == 4:
            return _clockwise(corners.reshape(4, 2).astype(np.float32))
    return None


def _clockwise(points: np.ndarray) -> np.ndarray:
    """Corners clockwise (y down) from the one with the smallest x + y."""
    centre = points.mean(axis=0)
    ordered = points[np.argsort(np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0]))]
    return np.roll(ordered, -int(np.argmin(ordered.sum(axis=1))), axis=0)


def outlined(
    gray: np.ndarray, box: tuple[float, float, float, float], scale: float
) -> tuple[np.ndarray, Perspective] | None:
    """The square crop of the outline found inside `box`, or None when there is none."""
    crop, mapping = box_crop(gray, box, scale)
    corners = outline(crop)
    if corners is None:
        return None
    inverse = mapping.inverse
    mapped = np.array([inverse @ np.array((x, y, 1.0)) for x, y in corners])
    return rectify(gray, (mapped[:, :2] / mapped[:, 2:3]).astype(np.float32), scale)
