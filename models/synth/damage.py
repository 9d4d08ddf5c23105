"""Physical damage to a printed code: tears, stickers, stains, creases, ink dropout, pen marks.

Every function draws onto the flat page (grayscale or BGR, changed in place)
around one code, given the code's quad and module size in pixels, with a
``severity`` in [0, 1].  The damage is sized in modules and in shares of the
symbol, so that severity means the same thing for a version 2 and a version
20 symbol: roughly, up to 0.4 a high error-correction level can still recover
the data, beyond that mostly nothing can.  The ground truth never changes:
the payload is still what was printed there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Quad = npt.NDArray[np.float64]  # (4, 2): the symbol's TL, TR, BR, BL
Colour = tuple[float, float, float]
Damage = Callable[[Image, Quad, float, np.random.Generator, float], str]
"""``(page, quad, module_px, rng, severity) -> description`` drawing in place."""

_SUBPIXEL = 4  # fractional bits for cv2 drawing: polygons keep sub-pixel outlines


def _colour(page: Image, bgr: Colour) -> tuple[float, ...] | float:
    if page.ndim == 2:
        b, g, r = bgr
        return 0.114 * b + 0.587 * g + 0.299 * r
    return bgr


def _fixed(points: npt.ArrayLike) -> npt.NDArray[np.int32]:
    return np.round(np.asarray(points, np.float64) * (1 << _SUBPIXEL)).astype(np.int32)


def _fill(page: Image, polygon: npt.ArrayLike, bgr: Colour) -> None:
    cv2.fillPoly(page, [_fixed(polygon)], _colour(page, bgr), cv2.LINE_AA, _SUBPIXEL)


def _ragged(
    rng: np.random.Generator, centre: npt.ArrayLike, radii: tuple[float, float], rough: float
) -> npt.NDArray[np.float64]:
    """An irregular closed outline: an ellipse whose radius wanders by ``rough``."""
    steps = 48
    angles = np.linspace(0, 2 * np.pi, steps, endpoint=False)
    # A few low-frequency harmonics give blob-like, not spiky, outlines.
    wobble = np.zeros(steps)
    for k in (2, 3, 5, 8):
        wobble += rng.normal(0, rough / k) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    r = 1.0 + wobble
    rx, ry = radii
    return np.asarray(centre, np.float64) + np.stack(
        [rx * r * np.cos(angles), ry * r * np.sin(angles)], axis=1
    )


@dataclass(frozen=True)
class _Window:
    """A page region around a code: translucent effects are drawn on a mask this size."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def around(cls, page: Image, quad: Quad, pad: float) -> _Window:
        h, w = page.shape[:2]
        lo = np.floor(quad.min(axis=0) - pad).astype(int)
        hi = np.ceil(quad.max(axis=0) + pad).astype(int)
        return cls(max(0, lo[0]), max(0, lo[1]), min(w, hi[0]), min(h, hi[1]))

    def mask(self) -> npt.NDArray[np.float32]:
        return np.zeros((self.y1 - self.y0, self.x1 - self.x0), np.float32)

    def local(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.asarray(points, np.float64) - np.array([self.x0, self.y0])

    def blend(self, page: Image, mask: npt.NDArray[np.float32], bgr: Colour) -> None:
        """Multiply the page toward ``bgr`` by ``mask`` (0-1), like a translucent dye."""
        roi = page[self.y0 : self.y1, self.x0 : self.x1]
        tint = np.asarray(_colour(page, bgr), np.float32) / 255.0
        m = mask[..., None] if page.ndim == 3 else mask
        roi[...] = np.clip(roi * (1 - m + m * tint), 0, 255).astype(np.uint8)


def _side(quad: Quad) -> float:
    return float(np.mean(np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1)))


def _pick_corner(rng: np.random.Generator, severity: float) -> int:
    """The symbol corner to hit: mostly the finder-free bottom-right when mild."""
    p_finder = 0.15 + 0.7 * severity
    if rng.random() >= p_finder:
        return 2
    return int(rng.choice((0, 1, 3)))


# --- damage types -----------------------------------------------------------------------------


def torn_corner(
    page: Image, quad: Quad, module: float, rng: np.random.Generator, severity: float
) -> str:
    """A corner of the code torn away: the desk shows through a ragged edge with a white rim."""
    corner = _pick_corner(rng, severity)
    side = _side(quad)
    depth = side * (0.12 + 0.38 * severity) * rng.uniform(0.8, 1.1)
    tip = quad[corner]
    inward = quad.mean(axis=0) - tip
    inward /= np.linalg.norm(inward)
    along = np.array([-inward[1], inward[0]])
    # The tear runs across the corner at ``depth`` from both of its edges,
    # frayed by a fraction of a module; everything beyond it is gone.
    points = 24
    edge = tip + inward * depth * np.sqrt(2) + np.linspace(-1, 1, points)[:, None] * along * depth
    edge += rng.normal(0, 0.25 * module, size=edge.shape)
    edge += inward * rng.normal(0, 0.06 * depth, size=(points, 1))
    reach = 0.5 * side
    beyond = [edge[-1] + along * depth - inward * reach, edge[0] - along * depth - inward * reach]
    rim = max(1.0, 0.35 * module)
    white = _colour(page, (250, 250, 250))
    cv2.polylines(page, [_fixed(edge)], False, white, round(2 * rim), cv2.LINE_AA, _SUBPIXEL)
    shade = float(rng.uniform(40, 150))
    desk = (shade * rng.uniform(0.7, 1.0), shade * rng.uniform(0.8, 1.1), shade)
    _fill(page, np.concatenate([edge, beyond]) - inward * rim, desk)
    return f"torn corner {corner} depth {depth / side:.2f}"


def sticker(
    page: Image, quad: Quad, module: float, rng: np.random.Generator, severity: float
) -> str:
    """A label, price sticker or ink blob stuck over part of the code."""
    corner = _pick_corner(rng, severity)
    side = _side(quad)
    size = side * (0.15 + 0.35 * severity) * rng.uniform(0.8, 1.2)
    centre = quad[corner] + (quad.mean(axis=0) - quad[corner]) * rng.uniform(0.05, 0.35)
    if rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        box = np.array([[-1, -0.6], [1, -0.6], [1, 0.6], [-1, 0.6]]) * size / 2
        shape = box @ rot.T + centre
        colour = tuple(
            float(c) for c in rng.choice([(200, 245, 250), (240, 240, 240), (180, 230, 255)])
        )
        _fill(page, shape, colour)
        kind = "label"
    else:
        shape = _ragged(rng, centre, (size / 2, size / 2 * rng.uniform(0.6, 1.0)), 0.25)
        ink = float(rng.uniform(10, 60))
        _fill(page, shape, (ink, ink * 0.8, ink * 0.6))
        kind = "blob"
    return f"{kind} at corner {corner} size {size / side:.2f}"


def stain(page: Image, quad: Quad, module: float, rng: np.random.Generator, severity: float) -> str:
    """A coffee or water stain: a translucent tan blob with a darker drying ring."""
    side = _side(quad)
    radius = side * rng.uniform(0.25, 0.6)
    centre = quad.mean(axis=0) + rng.uniform(-0.5, 0.5, size=2) * side
    window = _Window.around(page, quad, side)
    outline = window.local(_ragged(rng, centre, (radius, radius * rng.uniform(0.7, 1.0)), 0.12))
    mask = window.mask()
    body = 0.15 + 0.45 * severity
    cv2.fillPoly(mask, [_fixed(outline)], body, cv2.LINE_AA, _SUBPIXEL)
    ring = max(1, round(module * rng.uniform(0.5, 1.5)))
    cv2.polylines(mask, [_fixed(outline)], True, min(0.95, body + 0.3), ring, cv2.LINE_AA, 4)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.3 * module))
    tone = rng.uniform(0.25, 0.6)
    window.blend(page, mask, (60 * tone, 120 * tone, 200 * tone))
    return f"stain radius {radius / side:.2f} opacity {body:.2f}"


def crease(
    page: Image, quad: Quad, module: float, rng: np.random.Generator, severity: float
) -> str:
    """Folds across the code: a dark line with a bright lip, one side in shade."""
    side = _side(quad)
    count = 1 + int(rng.random() < severity) + int(rng.random() < severity / 2)
    window = _Window.around(page, quad, side)
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        through = quad.mean(axis=0) + normal * rng.uniform(-0.4, 0.4) * side
        a, b = through - direction * side * 2, through + direction * side * 2
        width = max(1, round(module * (0.15 + 0.35 * severity)))
        lip = normal * width
        cv2.line(page, _pt(a + lip), _pt(b + lip), _colour(page, (255, 255, 255)), width)
        cv2.line(page, _pt(a), _pt(b), _colour(page, (90, 90, 95)), max(1, width // 2))
        # The paper on one side of a fold tilts away from the light; the
        # shade fades within a fraction of the code, well inside the window.
        window.blend(page, _fold_shade(window, through, normal, side, module, severity), (0, 0, 0))
    return f"{count} crease(s)"


def _fold_shade(
    window: _Window,
    through: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    side: float,
    module: float,
    severity: float,
) -> npt.NDArray[np.float32]:
    ys, xs = np.mgrid[window.y0 : window.y1, window.x0 : window.x1].astype(np.float32)
    distance = (xs + 0.5 - through[0]) * normal[0] + (ys + 0.5 - through[1]) * normal[1]
    onset = 1.0 / (1.0 + np.exp(np.clip(-distance / max(0.5, module / 2), -60, 60)))
    fading = np.exp(-np.maximum(distance, 0) / (0.15 * side))
    return ((0.12 + 0.2 * severity) * onset * fading).astype(np.float32)


def ink_dropout(
    page: Image, quad: Quad, module: float, rng: np.random.Generator, severity: float
) -> str:
    """A failing print head: blank streaks across the code plus speckled missing ink."""
    side = _side(quad)
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    vertical = bool(rng.random() < 0.7)  # heads move across the page, streaks run down it
    streaks = int(rng.integers(1, 3 + round(5 * severity)))
    paper = _colour(page, (250, 250, 250))
    for _ in range(streaks):
        width = max(1.0, module * rng.uniform(0.15, 0.35 + 0.5 * severity))
        pos = rng.uniform(0, 1)
        if vertical:
            x = x0 + pos * (x1 - x0)
            rect = [(x, y0 - side), (x + width, y0 - side), (x + width, y1 + side), (x, y1 + side)]
        else:
            y = y0 + pos * (y1 - y0)
            rect = [(x0 - side, y), (x1 + side, y), (x1 + side, y + width), (x0 - side, y + width)]
        cv2.fillPoly(page, [_fixed(rect)], paper, cv2.LINE_AA, _SUBPIXEL)
    speckle = 0.25 * severity
    if speckle > 0.01:
        _speckle(page, (x0, y0, x1, y1), module, rng, speckle)
    return f"{streaks} streak(s), speckle {speckle:.2f}"


def pen_stroke(
    page: Image, quad: Quad, module: float, rng: np.random.Generator, severity: float
) -> str:
    """A signature or tick mark scrawled across the code in ballpoint ink."""
    side = _side(quad)
    strokes = 1 + int(rng.integers(1 + round(3 * severity)))
    ink = tuple(float(c) for c in rng.choice([(120, 40, 20), (30, 30, 30), (40, 40, 160)]))
    centre = quad.mean(axis=0)
    for _ in range(strokes):
        # Start beside the code and head across it, wandering like a hand does.
        bearing = rng.uniform(0, 2 * np.pi)
        start = centre + side * rng.uniform(0.5, 0.8) * np.array([np.cos(bearing), np.sin(bearing)])
        heading = bearing + np.pi + rng.uniform(-0.7, 0.7)
        turn = rng.normal(0, 0.12, size=60).cumsum()
        steps = (
            side
            * rng.uniform(0.02, 0.035)
            * np.stack([np.cos(heading + turn), np.sin(heading + turn)], axis=1)
        )
        path = start + steps.cumsum(axis=0)
        width = max(1, round(module * rng.uniform(0.3, 0.5 + 0.6 * severity)))
        cv2.polylines(page, [_fixed(path)], False, _colour(page, ink), width, cv2.LINE_AA, 4)
    return f"{strokes} pen stroke(s)"


def _pt(point: npt.NDArray[np.float64]) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))


def _speckle(
    page: Image,
    box: tuple[int, int, int, int],
    module: float,
    rng: np.random.Generator,
    fraction: float,
) -> None:
    """Lift ink from about ``fraction`` of the box in small round patches."""
    h, w = page.shape[:2]
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
    if x1 <= x0 or y1 <= y0:
        return
    # Smoothed noise thresholded at the right quantile gives blotches about
    # half a module across, the size of ink-starved spots.
    small = (max(2, round((x1 - x0) / (module * 0.5))), max(2, round((y1 - y0) / (module * 0.5))))
    field = rng.random((small[1], small[0])).astype(np.float32)
    field = cv2.resize(field, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    holes = field > np.quantile(field, 1.0 - fraction)
    roi = page[y0:y1, x0:x1]
    roi[holes] = np.maximum(roi[holes], np.uint8(235))


DAMAGES: dict[str, Damage] = {
    "torn_corner": torn_corner,
    "sticker": sticker,
    "stain": stain,
    "crease": crease,
    "ink_dropout": ink_dropout,
    "pen_stroke": pen_stroke,
}
