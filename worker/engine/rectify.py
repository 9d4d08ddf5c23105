"""Cutting a detected code out of the page as an upright square, and mapping back.

zxing finds finder patterns most reliably in a crop where the code is square, fills
most of the frame and has a few modules of quiet zone; a perspective warp from the
detector's four corners gives exactly that, whatever the camera angle was.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from worker.engine.deadline import spend

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


def rectify(
    gray: np.ndarray,
    quad: np.ndarray,
    scale: float,
    *,
    side: int | None = None,
    margin: float = MARGIN,
) -> tuple[np.ndarray, Perspective]:
    """The square crop of `quad` (corners in `gray` pixels, clockwise from top-left), `side`
    pixels a side (by default the quad's own size, within MIN_SIDE..MAX_SIDE), with `margin`
    of its size around it."""
    source = expand(np.asarray(quad, np.float32), margin).astype(np.float32)
    if side is None:
        side = int(np.clip(side_length(source), MIN_SIDE, MAX_SIDE))
    target = np.array([[0, 0], [side, 0], [side, side], [0, side]], np.float32)
    warp = cv2.getPerspectiveTransform(source, target)
    crop = cv2.warpPerspective(
        gray, warp, (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    spend("warp", crop.size)
    return crop, Perspective(np.linalg.inv(warp), scale)


def padded_bounds(
    shape: tuple[int, ...],
    box: tuple[float, float, float, float],
    scale: float,
    share: float,
    extra: float,
) -> tuple[int, int, int, int] | None:
    """The pixels (left, top, right, bottom) of `box` (page pixels) in an image of `shape` at
    `scale`, widened on every side by `share` of its longer side plus `extra` pixels (a code's
    quiet zone, a box's error) and clipped to the image; None when under 16 pixels remain
    either way: no code fits there."""
    x0, y0, x1, y1 = (v * scale for v in box)
    margin = share * max(x1 - x0, y1 - y0) + extra
    height, width = shape[:2]
    left, top = max(0, int(x0 - margin)), max(0, int(y0 - margin))
    right, bottom = min(width, int(x1 + margin) + 1), min(height, int(y1 + margin) + 1)
    if right - left < 16 or bottom - top < 16:
        return None
    return left, top, right, bottom


def box_crop(
    gray: np.ndarray, box: tuple[float, float, float, float], scale: float
) -> tuple[np.ndarray, Perspective]:
    """The axis-aligned box with a margin, scaled to a workable size: the fallback when
    the corners are poor (a torn or bent code) but the box is right."""
    x0, y0, x1, y1 = box
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    return rectify(gray, quad, scale)


def outline(crop: np.ndarray, reach: float = 0.0) -> np.ndarray | None:
    """The four corners of the code in a crop where it is the central dark blob, or None.
    `reach`: where no blob holds the crop's centre, the nearest within this share of the
    crop's side is taken for the code's.

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
    spend("blob", crop.size)
    centre = (width / 2.0, height / 2.0)
    large = [c for c in contours if cv2.contourArea(c) >= 0.1 * height * width]
    central = [c for c in large if cv2.pointPolygonTest(c, centre, False) >= 0]
    if not central and reach > 0.0:
        distances = [-cv2.pointPolygonTest(c, centre, True) for c in large]
        if distances and min(distances) <= reach * min(height, width):
            central = [large[int(np.argmin(distances))]]
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


# refine_outline's view: the outline warped to a square this many pixels a side, with this
# margin (share of the outline's size) around it. At 600 pixels a version-10 code (57
# modules) spans about 8 pixels a module: the hull's edges are traced at a fraction of one.
_REFINE_SIDE = 600
_REFINE_MARGIN = 0.15
# Closing kernel, as a share of the view's side: about two modules of a version-10 code, so
# a light run along an edge closes and the quiet zone (4 modules) does not.
_REFINE_CLOSE = 0.03
# A hull edge is taken for one of the outline's sides when it runs within this angle of it
# (degrees) and its middle lies within this share of the outline's side from it.
_REFINE_ANGLE = 25.0
_REFINE_REACH = 0.25


def refine_outline(
    gray: np.ndarray, quad: np.ndarray, *, side: int = _REFINE_SIDE
) -> np.ndarray | None:
    """`quad` (a code's outline within a few modules, clockwise) moved onto the code's own
    edges, or None when the view shows no central blob with four such edges.

    Seen at a steep angle, a code's far side is a module or less a pixel: an outline a
    module or two off there (what `outline` fits: the corners of a polygon approximating a
    closed blob) leaves the soft decoder sampling the wrong modules. In a view where the
    outline is a square, each of the code's sides is one long straight edge of its hull:
    the finder patterns' outer edges on three sides, the outermost dark modules on the
    fourth. The lines through the longest such edges meet at the code's corners (perspective
    keeps lines straight); on the benchmark's unread perspective codes the mean corner error
    fell from 1.0-4.9 modules to 0.3-0.8. `side`: the view's side in pixels (the zoom's
    default; a smaller view costs less and traces the edges to a coarser fraction of a module).
    """
    view, mapping = rectify(gray, quad, 1.0, side=side, margin=_REFINE_MARGIN)
    _, dark = cv2.threshold(view, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    size = max(3, int(side * _REFINE_CLOSE)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    solid = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, kernel)
    solid = cv2.morphologyEx(solid, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(solid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    spend("blob", view.size)
    centre = (side / 2.0, side / 2.0)
    central = [c for c in contours if cv2.pointPolygonTest(c, centre, False) >= 0]
    if not central:
        return None
    hull = cv2.convexHull(max(central, key=cv2.contourArea)).reshape(-1, 2).astype(np.float64)
    low = side * _REFINE_MARGIN / (1.0 + 2.0 * _REFINE_MARGIN)
    high = side - low
    square = np.array([[low, low], [high, low], [high, high], [low, high]])
    lines = []
    for i in range(4):
        edge = _hull_edge(hull, square[i], square[(i + 1) % 4], high - low)
        if edge is None:
            return None
        lines.append(edge)
    corners = []
    for i in range(4):
        corner = _meet(lines[i - 1], lines[i])
        if corner is None:
            return None
        corners.append(mapping.to_page(*corner))
    refined = np.array(corners, np.float32)
    return refined if np.isfinite(refined).all() else None


def _hull_edge(
    hull: np.ndarray, start: np.ndarray, end: np.ndarray, span: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The longest edge of `hull` along the side start -> end, or None."""
    direction = (end - start) / np.linalg.norm(end - start)
    normal = np.array([-direction[1], direction[0]])
    cos_limit = np.cos(np.radians(_REFINE_ANGLE))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        length = float(np.linalg.norm(b - a))
        if length < 1.0 or abs(float(np.dot((b - a) / length, direction))) < cos_limit:
            continue
        if abs(float(np.dot((a + b) / 2.0 - start, normal))) > _REFINE_REACH * span:
            continue
        if best is None or length > best[0]:
            best = (length, a, b)
    return None if best is None else (best[1], best[2])


def _meet(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float] | None:
    """Where the lines through two edges cross, or None when they are parallel."""
    (a, b), (c, d) = first, second
    ab, cd = b - a, d - c
    cross = ab[0] * cd[1] - ab[1] * cd[0]
    if abs(cross) < 1e-9:
        return None
    t = ((c[0] - a[0]) * cd[1] - (c[1] - a[1]) * cd[0]) / cross
    return (float(a[0] + t * ab[0]), float(a[1] + t * ab[1]))
