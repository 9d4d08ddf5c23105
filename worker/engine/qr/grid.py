"""Where the modules are: finder patterns, the module grid fitted to them and to the
alignment patterns, and each module's soft value.

The mapping from module coordinates (x = column, y = row, a module spanning [c, c + 1]) to
pixels starts either from three finder patterns (fit_finders: the homography through their
centres and the twelve corners of their outer rings, or the affine map through the centres
where a ring does not trace as a quadrilateral) or as the homography of the region's corners
taken as the symbol's outline (fit_outline, the finders then searched for where it puts
them). It takes in the bottom-right alignment pattern once found, and is then refined by
every alignment pattern of the version: a least-squares homography through all located
patterns plus a residual field that passes through each pattern's residual (Gaussian radial
basis functions), so that perspective and a bent page are both followed. Patterns are
searched for in a locally rectified patch (the current mapping resampled at 4 samples per
module) by normalised correlation with the ideal pattern, so the search works the same at
any rotation and scale.

Module values are area averages (a Gaussian of about a quarter module) at the module centres,
against a threshold halfway between the local light and dark levels; `equalise` takes a
blur's spill from the neighbouring modules out of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import cv2
import numpy as np

from worker.engine.deadline import spend

# Finder contours: nested dark-light-dark with areas 49 : 25 : 9 modules; blur, perspective
# and thresholding move the ratios, so ranges. The centre may shrink to a dot of about a
# module (1 : 40): a glint on a phone screen or blur thins it, and at 1 : 14 a photographed
# screen's finder was lost (the ring, its single island and their common centre still say
# finder; a wrong one only costs a triple that does not read).
_OUTER_TO_CENTRE = (2.5, 40.0)
_OUTER_TO_HOLE = (1.25, 4.0)
# Rectified patch resolution for pattern search.
_SAMPLES = 4
# Correlation an alignment pattern must reach to be used.
_ALIGNMENT_SCORE = 0.45
# And a finder pattern, searched for where an outline or two other finders put it.
_FINDER_SCORE = 0.5


# Gaussian widths (pixels of the decoder's region) a faint region is smoothed at before
# one more threshold (binarisations); on the benchmark's low_contrast photos these read
# 89 of 100 against 88 with (1, 2) and 83 without.
_SMOOTHING = (1.0, 2.0, 3.0)


@dataclass(frozen=True, slots=True)
class Finder:
    x: float
    y: float
    module: float
    # The outer ring's four corners (pixels, any order) where its contour is a clean
    # quadrilateral: they carry the perspective that three centres alone cannot.
    corners: tuple[tuple[float, float], ...] = ()


def binarisations(gray: np.ndarray) -> Iterator[np.ndarray]:
    """Dark = 255: local mean thresholds over an eighth and a quarter of the region (one
    follows uneven light, the other keeps a blurred finder's ring), then Otsu, then the
    first threshold over the region smoothed at each of _SMOOTHING; made one at a time,
    since the first usually finds the finders."""
    side = min(gray.shape)
    eighth, quarter = (max(11, (side // divisor) | 1) for divisor in (8, 4))
    for block in (eighth, quarter):
        dark = _local_threshold(gray, block, 3)
        spend("binarise", gray.size)
        yield dark
    dark = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)[1]
    spend("binarise", gray.size)
    yield dark
    # A faint print (modules 15-25 grey levels apart) under a few levels of noise: each
    # threshold above splits its modules into specks and no finder keeps its nested squares
    # (tests/test_qr_faint.py). Smoothed over about a third of a module first, they are
    # whole again; the decoder's regions are 2-10 pixels a module, hence several widths.
    for sigma in _SMOOTHING:
        dark = _local_threshold(cv2.GaussianBlur(gray, (0, 0), sigma), eighth, 2)
        spend("binarise smoothed", gray.size)
        yield dark


def _local_threshold(gray: np.ndarray, block: int, offset: float) -> np.ndarray:
    """Dark = 255 where a pixel is more than `offset` under the mean of its `block`."""
    return cv2.adaptiveThreshold(
        gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, offset
    )


# A binarisation with more dark-light changes than this share of its pixels (counted along
# every 4th row) may be mostly specks (a noisy photo, a halftone, JPEG blocks), whose borders
# cost more to trace than to erase first those that can be no part of a finder (_holed).
# Under it, tracing everything is the cheaper (measured over 540 binarisations of corpus
# crops, 400-1100 px).
_SPECKLED = 0.015
# Past it, what decides is how many dark components there are: tracing costs about a contour
# each, erasing about a pixel each. Many changes are often few components (the modules of a
# noisy photo's symbol at 2-3 px, joined into a few large shapes): those were traced in 1-3 ms
# a binarisation, where erasing first cost 1.3-1.9 times as much; a field of separate specks
# (tests/test_qr_finder_search.py, 0.03 components a pixel) took 115 ms to trace and 12 to
# erase first. So past _SPECKLED, only where _specks puts the components at this many a pixel
# or more: over the binarisations past _SPECKLED of every 4th work image the decoder saw on
# the 93 slowest corpus images (574, 2026-12-07 18:20 UTC, /tmp/c/proxy.py), the finder
# search took 1.00 s, against 1.40 s erasing first in all of them (1.12 s at 0.008, 1.03 s at
# 0.012, 1.01 s at 0.02; 0.97 s the cheaper way for each). Either way the same finders.
_SPECKS = 0.016
_NEIGHBOURS = np.ones((3, 3), np.uint8)


def find_finders(dark: np.ndarray) -> list[Finder]:
    """Finder pattern candidates in one binarisation (dark = 255), deduplicated."""
    spend("finder search", dark.size)
    changes = np.count_nonzero(dark[::4, 1:] != dark[::4, :-1])
    if changes > _SPECKLED * dark.size and _specks(dark) >= _SPECKS:
        holed = _holed(dark)
        return [] if holed is None else _trace(holed)
    return _trace(dark)


def _specks(dark: np.ndarray) -> float:
    """About how many dark components (8-connected) `dark` holds a pixel, from every 4th row:
    the dark pixels there with no dark pixel left of them or in the three above (where a
    scan in rows meets a component first; a shape with an uneven top is met more than
    once), times 4. A sixth of the cost of counting them (cv2.connectedComponents)."""
    row = dark[4::4, :]
    above = dark[3::4, :][: row.shape[0]]
    first = (
        (row[:, 1:-1] != 0)
        & (row[:, :-2] == 0)
        & (above[:, :-2] == 0)
        & (above[:, 1:-1] == 0)
        & (above[:, 2:] == 0)
    )
    return 4.0 * np.count_nonzero(first) / dark.size


def _holed(dark: np.ndarray) -> np.ndarray | None:
    """`dark` with every dark component (8-connected) that neither touches an enclosed light
    region (a hole: light, 4-connected, off the image's edge) nor lies in one erased, or None
    when it has no hole at all. A finder's ring touches its hole, and its centre and any
    other island in the hole lie in it, so each keeps its borders and its place in the
    contour tree: _trace finds the same finders, in the same order, in what is left."""
    light = cv2.copyMakeBorder(cv2.bitwise_not(dark), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    # findContours sees the image inside a frame of background: light reached from it is
    # no hole.
    cv2.floodFill(light, None, (0, 0), 0, flags=4)
    touching = cv2.bitwise_and(cv2.dilate(light[1:-1, 1:-1], _NEIGHBOURS), dark)
    at = np.flatnonzero(touching)
    if at.size == 0:
        return None
    count, labels = cv2.connectedComponents(dark, connectivity=8)
    kept = np.zeros(count, np.uint8)
    kept[labels.ravel()[at]] = 255
    return kept[labels]


def _trace(dark: np.ndarray) -> list[Finder]:
    """The finders whose three nested contours `dark`'s contour tree holds."""
    contours, hierarchy = cv2.findContours(dark, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]
    # Only a contour with a hole that holds a contour of its own can be a finder's ring: on a
    # noisy photo's crop that is a few dozen of 10,000 and more contours, chosen here at once
    # rather than one at a time in Python (the same candidates, in the same order).
    holes = links[:, 2]
    rings = np.flatnonzero(holes >= 0)
    rings = rings[links[holes[rings], 2] >= 0]
    found: list[Finder] = []
    for index in rings.tolist():
        contour = contours[index]
        hole = int(holes[index])
        centre_index = int(links[hole][2])
        outer = cv2.contourArea(contour)
        if outer < 36:
            continue
        inner = cv2.contourArea(contours[hole])
        centre = cv2.contourArea(contours[centre_index])
        if centre <= 0 or inner <= 0:
            continue
        if not (_OUTER_TO_CENTRE[0] <= outer / centre <= _OUTER_TO_CENTRE[1]):
            continue
        if not (_OUTER_TO_HOLE[0] <= outer / inner <= _OUTER_TO_HOLE[1]):
            continue
        if links[links[hole][2]][0] >= 0 and links[links[hole][2]][0] != centre_index:
            # More than one dark island inside the ring: a data region, not a finder.
            continue
        m_outer = cv2.moments(contour)
        m_centre = cv2.moments(contours[centre_index])
        if m_outer["m00"] <= 0 or m_centre["m00"] <= 0:
            continue
        ox, oy = m_outer["m10"] / m_outer["m00"], m_outer["m01"] / m_outer["m00"]
        cx, cy = m_centre["m10"] / m_centre["m00"], m_centre["m01"] / m_centre["m00"]
        # A traced w x w pixel square encloses (w - 1)^2.
        module = (math.sqrt(outer) + 1.0) / 7.0
        if math.hypot(ox - cx, oy - cy) > 0.75 * module:
            continue
        _x, _y, w, h = cv2.boundingRect(contour)
        if min(w, h) < 0.4 * max(w, h):
            continue
        quad = cv2.approxPolyDP(contour, 0.08 * cv2.arcLength(contour, True), True)
        corners = tuple((float(p[0][0]), float(p[0][1])) for p in quad) if len(quad) == 4 else ()
        found.append(Finder((ox + cx) / 2, (oy + cy) / 2, module, corners))
    unique: list[Finder] = []
    for f in sorted(found, key=lambda f: -f.module):
        if all(math.hypot(f.x - g.x, f.y - g.y) > 2.5 * g.module for g in unique):
            unique.append(f)
    return unique


@dataclass(frozen=True, slots=True)
class Triple:
    tl: Finder
    tr: Finder
    bl: Finder
    score: float


def triples(finders: list[Finder], limit: int = 6) -> list[Triple]:
    """Plausible (top-left, top-right, bottom-left) assignments, best first; top-right and
    bottom-left ordered as in an unmirrored symbol."""
    out: list[Triple] = []
    for a, b, c in combinations(finders[:12], 3):
        for corner, p, q in ((a, b, c), (b, a, c), (c, a, b)):
            u = np.array([p.x - corner.x, p.y - corner.y])
            v = np.array([q.x - corner.x, q.y - corner.y])
            lu, lv = float(np.hypot(*u)), float(np.hypot(*v))
            if lu < 1 or lv < 1:
                continue
            cosine = abs(float(u @ v)) / (lu * lv)
            length = max(lu, lv) / min(lu, lv)
            modules = [corner.module, p.module, q.module]
            size = max(modules) / min(modules)
            module = sum(modules) / 3
            span = (lu + lv) / 2 / module + 7
            if cosine > 0.75 or length > 2.5 or size > 2.5 or not (15 <= span <= 200):
                continue
            if u[0] * v[1] - u[1] * v[0] < 0:
                p, q = q, p
            out.append(Triple(corner, p, q, cosine + (length - 1) + (size - 1) * 0.5))
    out.sort(key=lambda t: t.score)
    return out[:limit]


class Mapping:
    """Module coordinates -> pixels: a homography plus a smooth residual correction that
    passes through the residuals measured at anchor points (Gaussian radial basis
    functions, lightly regularised), fading to the bare homography away from them."""

    def __init__(
        self,
        homography: np.ndarray,
        anchors: np.ndarray | None = None,
        residuals: np.ndarray | None = None,
        sigma: float = 1.0,
    ) -> None:
        self.homography = homography
        self.anchors = anchors
        self.residuals = residuals
        self.sigma = sigma
        self.weights: np.ndarray | None = None
        if anchors is not None and residuals is not None and len(anchors):
            kernel = self._kernel(anchors)
            kernel[np.diag_indices_from(kernel)] += 0.05
            try:
                self.weights = np.linalg.solve(kernel, residuals)
            except np.linalg.LinAlgError:
                self.weights = None

    def _kernel(self, points: np.ndarray) -> np.ndarray:
        assert self.anchors is not None
        dx = points[:, None, 0] - self.anchors[None, :, 0]
        dy = points[:, None, 1] - self.anchors[None, :, 1]
        # dx^2 + dy^2 as the sum over the last axis of the squared differences adds them.
        return np.exp(-(dx * dx + dy * dy) / (2 * self.sigma**2))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        # A mapping is evaluated some 150 times a decode, mostly at a few points: numpy's
        # per-call overhead (nan_to_num, stack) was most of its cost, so the two coordinates
        # are written into one array and the non-finite ones replaced in place (the same
        # values, each computed as before).
        (h00, h01, h02), (h10, h11, h12), (h20, h21, h22) = self.homography.tolist()
        px, py = pts[:, 0], pts[:, 1]
        den = px * h20 + py * h21 + h22
        out = np.empty((len(pts), 2))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            np.divide(px * h00 + py * h01 + h02, den, out=out[:, 0])
            np.divide(px * h10 + py * h11 + h12, den, out=out[:, 1])
        # A degenerate fit (points behind the horizon) samples off the image, not NaN.
        out[~np.isfinite(out)] = -1e4
        if self.weights is not None:
            out += self._kernel(pts) @ self.weights
        return out


def finder_centres(size: int) -> np.ndarray:
    """The three finders' centres in module coordinates (top-left, top-right, bottom-left)."""
    return np.array([[3.5, 3.5], [size - 3.5, 3.5], [3.5, size - 3.5]])


def initial_mapping(triple: Triple, size: int) -> Mapping:
    src = finder_centres(size).astype(np.float32)
    dst = np.array(
        [[triple.tl.x, triple.tl.y], [triple.tr.x, triple.tr.y], [triple.bl.x, triple.bl.y]],
        dtype=np.float32,
    )
    affine = cv2.getAffineTransform(src, dst)
    return Mapping(np.vstack([affine, [0.0, 0.0, 1.0]]))


def _alignment_template() -> np.ndarray:
    """The ideal alignment pattern at _SAMPLES samples a module: 0 dark, 255 light."""
    dark = np.ones((5, 5), dtype=np.float32)
    dark[1:4, 1:4] = 0
    dark[2, 2] = 1
    return 255 * (1 - np.kron(dark, np.ones((_SAMPLES, _SAMPLES), dtype=np.float32)))


_TEMPLATE = _alignment_template()


def rectify(
    image: np.ndarray, mapping: Mapping, x0: float, y0: float, w: float, h: float
) -> np.ndarray:
    """The image resampled on the module grid [x0, x0 + w) x [y0, y0 + h), _SAMPLES a module."""
    nx, ny = round(w * _SAMPLES), round(h * _SAMPLES)
    xs = x0 + (np.arange(nx) + 0.5) / _SAMPLES
    ys = y0 + (np.arange(ny) + 0.5) / _SAMPLES
    gx, gy = np.meshgrid(xs, ys)
    pts = mapping(np.stack([gx.ravel(), gy.ravel()], axis=1))
    mx = pts[:, 0].reshape(ny, nx).astype(np.float32)
    my = pts[:, 1].reshape(ny, nx).astype(np.float32)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def find_alignment(
    image: np.ndarray, mapping: Mapping, cx: float, cy: float, radius: float
) -> tuple[float, float, float] | None:
    """The alignment pattern nearest (cx, cy) (module coordinates of its centre) within
    `radius` modules: its centre in module coordinates under `mapping`, and the score."""
    return _find_pattern(image, mapping, cx, cy, radius, _TEMPLATE, 2.5, _ALIGNMENT_SCORE)


def _find_pattern(
    image: np.ndarray,
    mapping: Mapping,
    cx: float,
    cy: float,
    radius: float,
    template: np.ndarray,
    half_template: float,
    min_score: float,
) -> tuple[float, float, float] | None:
    half = radius + half_template
    patch = rectify(image, mapping, cx - half, cy - half, 2 * half, 2 * half)
    if patch.shape[0] < template.shape[0] or patch.shape[1] < template.shape[1]:
        return None
    scores = cv2.matchTemplate(patch.astype(np.float32), template, cv2.TM_CCOEFF_NORMED)
    spend("pattern search", patch.size)
    # Prefer the peak nearest the prediction among good ones: a neighbour in the data can
    # look like the pattern too.
    sy, sx = np.indices(scores.shape)
    centre = (scores.shape[1] - 1) / 2, (scores.shape[0] - 1) / 2
    dist = np.hypot(sx - centre[0], sy - centre[1]) / (_SAMPLES * max(radius, 1.0))
    ranked = scores - 0.15 * dist
    iy, ix = np.unravel_index(int(np.argmax(ranked)), scores.shape)
    score = float(scores[iy, ix])
    if not np.isfinite(score) or score < min_score:
        return None
    fx, fy = float(ix), float(iy)
    if 0 < ix < scores.shape[1] - 1:
        left, c, r = scores[iy, ix - 1], scores[iy, ix], scores[iy, ix + 1]
        den = left - 2 * c + r
        if den < 0:
            fx += float(np.clip(0.5 * (left - r) / den, -0.5, 0.5))
    if 0 < iy < scores.shape[0] - 1:
        t, c, b = scores[iy - 1, ix], scores[iy, ix], scores[iy + 1, ix]
        den = t - 2 * c + b
        if den < 0:
            fy += float(np.clip(0.5 * (t - b) / den, -0.5, 0.5))
    # Top-left of the template at (fx, fy) samples; its centre is half_template further.
    mx = cx - half + fx / _SAMPLES + half_template
    my = cy - half + fy / _SAMPLES + half_template
    return mx, my, score


def fit(
    image: np.ndarray,
    mapping: Mapping,
    size: int,
    alignment: list[tuple[int, int]],
    src: list[np.ndarray],
    dst: list[np.ndarray],
    shape: tuple[list[np.ndarray], list[np.ndarray]] = ([], []),
) -> Mapping:
    """The module->pixel mapping for a symbol of `size` modules a side, starting from
    `mapping` and the module points `src` already located at pixels `dst` (finder centres).
    `shape` holds more located points (the finders' corners) that the homographies use and
    the residual field does not: anchored there too, it would cost more than it follows."""
    src = list(src)
    dst = list(dst)
    if not alignment:
        return mapping
    shape_src, shape_dst = list(shape[0]), list(shape[1])
    # The bottom-right pattern first, with a wide search: it is what perspective moves most.
    corner = max(alignment, key=lambda rc: rc[0] + rc[1])
    found = find_alignment(image, mapping, corner[1] + 0.5, corner[0] + 0.5, 3.0 + 0.08 * size)
    if found is not None:
        px = mapping(np.array([[found[0], found[1]]]))[0]
        src.append(np.array([corner[1] + 0.5, corner[0] + 0.5]))
        dst.append(px)
        if len(src) + len(shape_src) >= 4:
            h, _ = cv2.findHomography(
                np.array(src + shape_src, np.float64), np.array(dst + shape_dst, np.float64), 0
            )
            if h is not None:
                mapping = Mapping(h)
    rest = [rc for rc in alignment if rc != corner]
    if not rest:
        return mapping
    for r, c in sorted(rest, key=lambda rc: rc[0] + rc[1]):
        found = find_alignment(image, mapping, c + 0.5, r + 0.5, 2.0)
        if found is None:
            continue
        src.append(np.array([c + 0.5, r + 0.5]))
        dst.append(mapping(np.array([[found[0], found[1]]]))[0])
    if len(src) + len(shape_src) < 4:
        return mapping
    src_a = np.array(src, np.float64)
    dst_a = np.array(dst, np.float64)
    h, _ = cv2.findHomography(
        np.array(src + shape_src, np.float64), np.array(dst + shape_dst, np.float64), 0
    )
    if h is None:
        return mapping
    base = Mapping(h)
    residuals = dst_a - base(src_a)
    spacing = (size - 13) / max(1, math.isqrt(len(alignment) + 3) - 1)
    return Mapping(h, src_a, residuals, sigma=0.6 * spacing)


def fit_finders(
    image: np.ndarray, triple: Triple, size: int, alignment: list[tuple[int, int]]
) -> Mapping:
    """fit() from three located finder patterns: their centres, and their outer corners
    where each finder's ring traced as a quadrilateral (finder_perspective), or where two
    of the three did."""
    src = list(finder_centres(size))
    dst = [np.array([f.x, f.y]) for f in (triple.tl, triple.tr, triple.bl)]
    mapping = initial_mapping(triple, size)
    shape: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    corners = finder_perspective(mapping, triple, size)
    rings = [i for i, f in enumerate((triple.tl, triple.tr, triple.bl)) if len(f.corners) == 4]
    if corners is None and len(rings) == 2:
        # One ring did not trace as a quadrilateral (merged with a module beside it, or a
        # finder only placed, not seen): the other two rings carry the perspective.
        corners = finder_perspective(mapping, triple, size, tuple(rings))
    if corners is not None:
        mapping, corner_src, corner_dst = corners
        shape = (corner_src, corner_dst)
    return fit(image, mapping, size, alignment, src, dst, shape)


# The corners of the three finders' outer rings in module coordinates (top-left, top-right,
# bottom-left finder, in the order of Triple's fields).
def finder_corner_points(size: int) -> list[np.ndarray]:
    out = []
    for c0, r0 in ((0, 0), (size - 7, 0), (0, size - 7)):
        out.append(np.array([[c0, r0], [c0 + 7, r0], [c0 + 7, r0 + 7], [c0, r0 + 7]], float))
    return out


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """The least-squares homography (h33 = 1) taking src to dst, both normalised first (to
    zero mean and unit spread, for conditioning): the 8 x 8 normal equations, a fraction of
    cv2.findHomography's or an SVD's cost for the 15 points of finder_perspective."""
    mean_s, mean_d = src.mean(axis=0), dst.mean(axis=0)
    scale_s = 1.0 / max(float(np.abs(src - mean_s).mean()), 1e-9)
    scale_d = 1.0 / max(float(np.abs(dst - mean_d).mean()), 1e-9)
    x, y = ((src - mean_s) * scale_s).T
    u, v = ((dst - mean_d) * scale_d).T
    zero, one = np.zeros_like(x), np.ones_like(x)
    rows = np.empty((2 * len(x), 8))
    rows[: len(x)] = np.column_stack([x, y, one, zero, zero, zero, -u * x, -u * y])
    rows[len(x) :] = np.column_stack([zero, zero, zero, x, y, one, -v * x, -v * y])
    try:
        solution = np.linalg.solve(rows.T @ rows, rows.T @ np.concatenate([u, v]))
    except np.linalg.LinAlgError:
        return None
    t_s = np.array(
        [[scale_s, 0, -scale_s * mean_s[0]], [0, scale_s, -scale_s * mean_s[1]], [0, 0, 1]]
    )
    t_d = np.array([[1 / scale_d, 0, mean_d[0]], [0, 1 / scale_d, mean_d[1]], [0, 0, 1]])
    h = t_d @ np.append(solution, 1.0).reshape(3, 3) @ t_s
    if not np.isfinite(h).all() or abs(h[2, 2]) < 1e-12:
        return None
    return h / h[2, 2]


def ring_edge(corners: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """A finder ring's traced corners (..., 4, 2) on its edge: a traced contour runs through
    the ring's outermost pixel centres, half a pixel inside the edge, so each corner is moved
    outward from its finder's centre (..., 2) by that half pixel."""
    away = corners - centres[..., None, :]
    norm = np.maximum(np.linalg.norm(away, axis=-1, keepdims=True), 1e-9)
    return corners + 0.5 * math.sqrt(2) * away / norm


def finder_perspective(
    mapping: Mapping, triple: Triple, size: int, traced: tuple[int, ...] = (0, 1, 2)
) -> tuple[Mapping, list[np.ndarray], list[np.ndarray]] | None:
    """A homography through the finders' centres and outer corners, with the corner
    correspondences, or None where they do not all trace as quadrilaterals or do not agree.
    `traced`: which of the triple's finders (0 top-left, 1 top-right, 2 bottom-left) were
    seen; by default all three, else two, the third only a guess that `mapping` holds.

    Three centres fix an affine map only: a symbol seen at an angle (a version 1 above all,
    with no alignment pattern to correct it) is then sampled a module or more off at its
    far corner. Each finder's ring gives four more points; each corner is matched to the
    ideal corner the affine map puts nearest it (within 1.5 modules), and the homography
    must put the centres back within half a module."""
    finders = [(triple.tl, triple.tr, triple.bl)[i] for i in traced]
    if any(len(f.corners) != 4 for f in finders):
        return None
    count = len(finders)
    seen = np.array([f.corners for f in finders], dtype=np.float64)  # (count, 4, 2)
    ideal = np.array(finder_corner_points(size))[list(traced)]  # (count, 4, 2)
    # The starting map is affine: its inverse is the 2 x 2 part's inverse and a shift.
    linear, shift = mapping.homography[:2, :2], mapping.homography[:2, 2]
    det = linear[0, 0] * linear[1, 1] - linear[0, 1] * linear[1, 0]
    if abs(det) < 1e-12:
        return None
    inverse = np.array([[linear[1, 1], -linear[0, 1]], [-linear[1, 0], linear[0, 0]]]) / det
    modules = (seen - shift) @ inverse.T
    distance = np.linalg.norm(modules[:, :, None, :] - ideal[:, None, :, :], axis=3)
    match = distance.argmin(axis=2)  # (count, 4): which ideal corner each seen corner is
    if distance.min(axis=2).max() > 1.5 or any(len(set(m)) != 4 for m in match.tolist()):
        return None
    centres_dst = np.array([[f.x, f.y] for f in finders])
    corner_dst = ring_edge(seen, centres_dst).reshape(4 * count, 2)
    corner_src = np.take_along_axis(ideal, match[:, :, None], axis=1).reshape(4 * count, 2)
    centres_src = finder_centres(size)[list(traced)]
    h = _homography(np.vstack([corner_src, centres_src]), np.vstack([corner_dst, centres_dst]))
    if h is None:
        return None
    projected = np.column_stack([centres_src, np.ones(count)]) @ h.T
    back = projected[:, :2] / projected[:, 2:3]
    module = sum(f.module for f in finders) / count
    if not (np.abs(back - centres_dst).max() <= 0.5 * module):
        return None
    return Mapping(h), list(corner_src), list(corner_dst)


def _finder_template() -> np.ndarray:
    """The ideal finder pattern with its separator (9 x 9 modules), _SAMPLES a module."""
    dark = np.zeros((9, 9), dtype=np.float32)
    dark[1:8, 1:8] = 1
    dark[2:7, 2:7] = 0
    dark[3:6, 3:6] = 1
    return 255 * (1 - np.kron(dark, np.ones((_SAMPLES, _SAMPLES), dtype=np.float32)))


_FINDER = _finder_template()


def find_finder(
    image: np.ndarray, mapping: Mapping, cx: float, cy: float, radius: float
) -> tuple[float, float, float] | None:
    """The finder pattern (with its separator) nearest module coordinates (cx, cy) of its
    centre within `radius` modules, by correlation at the mapping's module pitch: its
    centre in pixels and the correlation, or None."""
    found = _find_pattern(image, mapping, cx, cy, radius, _FINDER, 4.5, _FINDER_SCORE)
    if found is None:
        return None
    x, y = mapping(np.array([[found[0], found[1]]]))[0]
    return float(x), float(y), found[2]


# The other finders of a lone traced one (triples_along): the line to each runs along one of the
# finder's own axes to within a few degrees (its ring's corners give them) and perspective
# bends it, so the search reaches this many modules either side of the axis; a partner is
# the best correlation with the pattern in the strip, at least _FINDER_SCORE (as a finder
# searched for where an outline or two finders put it: the untraced finders of two
# qr-photos-val photos correlate at 0.55-0.72 in the traced one's frame, the best elsewhere
# in those strips at 0.1-0.32).
_ALONG_SLACK = 3.0
# Finder centres lie 14 (version 1) to 170 (version 40) modules apart along a side.
_ALONG_NEAREST = 13.0
_ALONG_FURTHEST = 171.0


def finder_frame(finder: Finder) -> Mapping | None:
    """The affine map from the module coordinates of `finder`'s own 7 x 7 square (its
    centre at (3.5, 3.5), its sides along the axes) to pixels, least squares through its
    ring's four corners and its centre; None where the ring did not trace as a
    quadrilateral. Which corner is which is unknown (a finder looks the same turned by a
    quarter), so the axes are the symbol's up to a turn."""
    if len(finder.corners) != 4:
        return None
    centre = np.array([finder.x, finder.y])
    seen = np.array(finder.corners, dtype=np.float64)
    away = seen - centre
    order = np.argsort(np.arctan2(away[:, 1], away[:, 0]))
    seen, away = seen[order], away[order]
    if np.linalg.norm(away, axis=1).min() < 1e-6:
        return None
    seen = ring_edge(seen, centre)
    # Sorted by angle in the image (y down), the corners go round as these do.
    src = np.array([[0, 0], [7, 0], [7, 7], [0, 7], [3.5, 3.5]], dtype=np.float64)
    dst = np.vstack([seen, centre])
    solution, *_ = np.linalg.lstsq(np.column_stack([src, np.ones(5)]), dst, rcond=None)
    homography = np.vstack([solution.T, [0.0, 0.0, 1.0]])
    if abs(np.linalg.det(homography[:2, :2])) < 1e-6:
        return None
    return Mapping(homography)


def triples_along(image: np.ndarray, finder: Finder) -> list[Triple]:
    """Finder triples with two finders that did not trace (rings broken where blur
    lightened them, washed out by glare), found from one that did: along each of its own
    axes (finder_frame), 13 to 171 modules out and within the image, where the pattern at
    its pitch correlates best, at least _FINDER_SCORE (a partner); then from each partner
    along the two axes across the line to it (perspective shears a symbol too much for
    the square two finders make to say where the third is). The top-left is the finder
    at the right angle: a partner with a third found from it, or the traced finder with
    partners on two axes at right angles. Each found at the traced finder's module size,
    without corners; best correlated first."""
    frame = finder_frame(finder)
    if frame is None:
        return []

    def at(mx: float, my: float) -> Finder:
        x, y = frame(np.array([[mx, my]]))[0]
        return Finder(float(x), float(y), finder.module)

    scored: list[tuple[float, Finder, Finder, Finder]] = []
    partners = _along(image, frame, ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)))
    for (score, mx, my, (dx, dy)), (other, ox, oy, (ex, ey)) in combinations(partners, 2):
        if dx * ex + dy * ey == 0:  # on axes at right angles: the traced one the corner
            scored.append((min(score, other), finder, at(mx, my), at(ox, oy)))
    for score, mx, my, (dx, dy) in partners:
        # The same axes, moved to the partner's centre.
        shift = np.array([[1.0, 0.0, mx - 3.5], [0.0, 1.0, my - 3.5], [0.0, 0.0, 1.0]])
        moved = Mapping(frame.homography @ shift)
        corner = at(mx, my)
        for third, tx, ty, _ in _along(image, moved, ((dy, dx), (-dy, -dx))):
            scored.append((min(score, third), corner, finder, at(tx + mx - 3.5, ty + my - 3.5)))
    out = []
    for score, corner, p, q in sorted(scored, key=lambda s: -s[0]):
        u = (p.x - corner.x, p.y - corner.y)
        v = (q.x - corner.x, q.y - corner.y)
        if u[0] * v[1] - u[1] * v[0] < 0:  # top-right and bottom-left as in grid.triples
            p, q = q, p
        out.append(Triple(corner, p, q, score))
    return out


def _along(
    image: np.ndarray, frame: Mapping, directions: tuple[tuple[float, float], ...]
) -> list[tuple[float, float, float, tuple[float, float]]]:
    """For triples_along: in each direction from module (3.5, 3.5) of `frame`, the best
    correlation with the finder pattern at least _FINDER_SCORE, as (score, x, y in `frame`'s
    module coordinates, direction), best first."""
    height, width = image.shape[:2]
    steps = np.arange(_ALONG_NEAREST, _ALONG_FURTHEST + 1.0)
    half = 4.5 + _ALONG_SLACK  # the template's half and the slack across
    found: list[tuple[float, float, float, tuple[float, float]]] = []
    for dx, dy in directions:
        centres = frame(np.column_stack([3.5 + dx * steps, 3.5 + dy * steps]))
        inside = (
            (centres[:, 0] >= 0)
            & (centres[:, 0] <= width - 1)
            & (centres[:, 1] >= 0)
            & (centres[:, 1] <= height - 1)
        )
        if not inside[0]:
            continue
        # The first step off the image ends the search in this direction.
        reach = float(steps[-1] if inside.all() else steps[inside.argmin() - 1])
        near, far = _ALONG_NEAREST - 4.5, reach + 4.5
        if dx:
            x0 = 3.5 + near if dx > 0 else 3.5 - far
            box = (x0, 3.5 - half, far - near, 2 * half)
        else:
            y0 = 3.5 + near if dy > 0 else 3.5 - far
            box = (3.5 - half, y0, 2 * half, far - near)
        patch = rectify(image, frame, *box).astype(np.float32)
        if patch.shape[0] < _FINDER.shape[0] or patch.shape[1] < _FINDER.shape[1]:
            continue
        scores = cv2.matchTemplate(patch, _FINDER, cv2.TM_CCOEFF_NORMED)
        spend("pattern search", patch.size)
        iy, ix = np.unravel_index(int(np.argmax(scores)), scores.shape)
        score = float(scores[iy, ix])
        if not np.isfinite(score) or score < _FINDER_SCORE:
            continue
        # The template's top-left at (ix, iy) samples: its centre 4.5 modules further.
        found.append((score, box[0] + ix / _SAMPLES + 4.5, box[1] + iy / _SAMPLES + 4.5, (dx, dy)))
    found.sort(key=lambda f: -f[0])
    return found


def fit_outline(
    image: np.ndarray, corners: np.ndarray, size: int, alignment: list[tuple[int, int]]
) -> Mapping | None:
    """fit() from the symbol's outer corners (TL, TR, BR, BL, in pixels), as zxing-cpp
    reports a symbol it located: the finders are searched for where the outline puts them.
    None when fewer than two finders are where the outline says."""
    n = float(size)
    outline = np.array([[0, 0], [n, 0], [n, n], [0, n]], dtype=np.float64)
    h, _ = cv2.findHomography(outline, corners.astype(np.float64), 0)
    if h is None:
        return None
    mapping = Mapping(h)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    for cx, cy in finder_centres(size):
        found = _find_pattern(image, mapping, cx, cy, 1.5, _FINDER, 4.5, _FINDER_SCORE)
        if found is not None:
            src.append(np.array([cx, cy]))
            dst.append(mapping(np.array([[found[0], found[1]]]))[0])
    if len(src) < 2:
        return None
    if not alignment:
        # The outline's corners hold the fit where the finders alone cannot (version 1).
        src += list(outline)
        dst += list(corners.astype(np.float64))
    if len(src) >= 4:
        h2, _ = cv2.findHomography(np.array(src), np.array(dst), 0)
        if h2 is not None:
            mapping = Mapping(h2)
    return fit(image, mapping, size, alignment, src[:3], dst[:3])


def outline_sizes(
    image: np.ndarray, corners: np.ndarray, limit: int = 3
) -> list[tuple[float, int, int]]:
    """(score, turn, size): symbol sizes and rotations of the outline (corners rolled by
    `turn`) that put finder and timing patterns where the outline's corners say, best first;
    the score is the share of those modules sampled right. All hypotheses are sampled in one
    pass: module coordinates over the size make one unit square per rotation."""
    side = float(np.mean([np.hypot(*(corners[i] - corners[(i + 1) % 4])) for i in range(4)]))
    sizes = [17 + 4 * v for v in range(1, 41) if side / (17 + 4 * v) >= 1.2]
    if not sizes:
        return []
    unit = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    unit_points, expected, bounds, starts = _outline_points(tuple(sizes))
    scored: list[tuple[float, int, int]] = []
    spend("outline modules", 4 * len(unit_points))
    for turn in range(4):
        h, _ = cv2.findHomography(unit, np.roll(corners, -turn, axis=0).astype(np.float64), 0)
        if h is None:
            continue
        pts = Mapping(h)(unit_points).astype(np.float32)
        width = 1000
        padded = -(-len(pts) // width) * width
        mx = np.full(padded, -1.0, np.float32)
        my = np.full(padded, -1.0, np.float32)
        mx[: len(pts)] = pts[:, 0]
        my[: len(pts)] = pts[:, 1]
        values = (
            cv2.remap(image, mx.reshape(-1, width), my.reshape(-1, width), cv2.INTER_LINEAR)
            .ravel()[: len(pts)]
            .astype(np.float32)
        )
        counts = np.array(bounds, dtype=np.float32)
        means = np.add.reduceat(values, starts) / counts
        threshold = np.repeat(means, bounds)
        right = np.add.reduceat(((values < threshold) == expected).astype(np.float32), starts)
        for size, share in zip(sizes, right / counts, strict=True):
            scored.append((float(share), turn, size))
    scored.sort(reverse=True)
    return scored[:limit]


@lru_cache(maxsize=40)
def _outline_points(
    sizes: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], np.ndarray]:
    """For outline_sizes, the finder and timing modules of all `sizes` in one array: their
    centres over the size (a unit square), colours, count per size and where each size's
    start. The same for every outline of a side (`sizes` is all versions up to the one
    whose modules are too small), so made once: rebuilding it was a quarter of the search."""
    points = []
    colours = []
    bounds = []
    for size in sizes:
        rows, cols, dark = _outline_modules(size)
        points.append(np.stack([cols + 0.5, rows + 0.5], axis=1) / size)
        colours.append(dark)
        bounds.append(len(rows))
    unit_points = np.concatenate(points)
    expected = np.concatenate(colours)
    starts = np.concatenate([[0], np.cumsum(bounds)[:-1]])
    for shared in (unit_points, expected, starts):
        shared.flags.writeable = False
    return unit_points, expected, tuple(bounds), starts


@lru_cache(maxsize=40)
def _outline_modules(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and colours of the three finders and both timing patterns."""
    rows: list[int] = []
    cols: list[int] = []
    dark: list[bool] = []
    for r0, c0 in ((0, 0), (0, size - 7), (size - 7, 0)):
        for r in range(7):
            for c in range(7):
                rows.append(r0 + r)
                cols.append(c0 + c)
                ring = min(r, c, 6 - r, 6 - c)
                dark.append(ring != 1)
    for i in range(8, size - 8):
        rows += [6, i]
        cols += [i, 6]
        dark += [i % 2 == 0, i % 2 == 0]
    return np.array(rows, float), np.array(cols, float), np.array(dark)


def timing_fits(
    image: np.ndarray, tl: np.ndarray, tr: np.ndarray, bl: np.ndarray, size: int
) -> np.ndarray:
    """For K finder-centre triples (tl, tr, bl: (K, 2) pixels each), the share of both
    timing patterns' modules that the affine grid through the three centres puts on pixels
    of their colour (single pixels against the patterns' own mean): a cheap test of where
    a grid is before any fitting, right at chance (half) where it is not the symbol's."""
    steps = (np.arange(8, size - 8, dtype=np.float64) + 0.5 - 3.5) / (size - 7)
    across = 3.0 / (size - 7)  # the timing patterns run 3 modules in from the finder centres
    right, down = (tr - tl)[:, None, :], (bl - tl)[:, None, :]
    start = tl[:, None, :]
    row = start + steps[None, :, None] * right + across * down
    column = start + across * right + steps[None, :, None] * down
    pts = np.concatenate([row, column], axis=1).astype(np.float32)  # (K, modules, 2)
    values = _remap(image, pts).astype(np.float32)
    spend("timing modules", pts.size // 2)
    dark = np.tile((np.arange(8, size - 8) % 2) == 0, 2)
    return ((values < values.mean(axis=1, keepdims=True)) == dark[None, :]).mean(axis=1)


@dataclass(frozen=True, slots=True)
class Samples:
    values: np.ndarray  # (size, size) float: area-averaged intensity at each module centre
    level: np.ndarray  # (size, size) float: values against the local threshold, dark > 0
    dark: np.ndarray  # (size, size) bool
    confidence: np.ndarray  # (size, size) float in [0, 1]


def sample(image: np.ndarray, mapping: Mapping, size: int, module_px: float) -> Samples:
    """Each module's intensity averaged over its central area, against a local threshold
    from the neighbouring modules' light and dark levels."""
    sigma = max(0.35, 0.22 * module_px)
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    spend("blur", image.size)
    centres = np.arange(size) + 0.5
    gx, gy = np.meshgrid(centres, centres)
    pts = mapping(np.stack([gx.ravel(), gy.ravel()], axis=1))
    mx = pts[:, 0].reshape(size, size).astype(np.float32)
    my = pts[:, 1].reshape(size, size).astype(np.float32)
    values = cv2.remap(blurred, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    spend("modules", size * size)
    return classify(values.astype(np.float32))


def sample_darkest(
    image: np.ndarray, mapping: Mapping, size: int, module_px: float, reach: float
) -> Samples:
    """Each module's darkest point within `reach` modules of its centre (nine points of a
    lightly blurred image), against the same local threshold as `sample`. The points are
    interpolated between the module corners, where the mapping is evaluated once: nine
    evaluations of a fitted mapping cost ten times the sampling (26 ms for a version 17)."""
    sigma = max(0.35, 0.12 * module_px)
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    spend("blur", image.size)
    edges = np.arange(size + 1, dtype=np.float64)
    gx, gy = np.meshgrid(edges, edges)
    corners = mapping(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(size + 1, size + 1, 2)
    tl, tr = corners[:-1, :-1], corners[:-1, 1:]
    bl, br = corners[1:, :-1], corners[1:, 1:]
    values: np.ndarray | None = None
    for fy in (0.5 - reach, 0.5, 0.5 + reach):
        for fx in (0.5 - reach, 0.5, 0.5 + reach):
            pts = ((1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)).astype(
                np.float32
            )
            seen = _remap(blurred, pts)
            values = seen if values is None else np.minimum(values, seen)
    assert values is not None
    spend("darkest modules", size * size)
    return classify(values.astype(np.float32))


def _remap(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """`image` sampled (bilinear, edges replicated) at `pts`, float32 (..., 2) x, y."""
    return cv2.remap(
        image,
        np.ascontiguousarray(pts[..., 0]),
        np.ascontiguousarray(pts[..., 1]),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def classify(values: np.ndarray) -> Samples:
    high, low = _local_levels(values)
    threshold = (high + low) / 2
    contrast = float(np.median(high - low))
    if contrast <= 1e-3:
        zero = np.zeros_like(values)
        return Samples(values, zero, values < threshold, zero)
    level = (threshold - values) / (0.5 * contrast)
    return Samples(values, level, level > 0, np.clip(np.abs(level), 0.0, 1.0))


def contrast_kept(values: np.ndarray) -> np.ndarray:
    """For each module, the share of the symbol's typical contrast its neighbourhood keeps
    (0..1): what the erasure choice weighs each module's confidence by. Inside a glare spot
    or under a stain the modules are washed towards one level, and against a threshold from
    equally washed neighbours a module can still look confidently light or dark: its
    codeword is then corrected as an error (twice an erasure's cost) or not at all. On the
    benchmark's glare photos whose blocks all lay within the margin had the wrong codewords
    been erased, this read 3 of 13 more from their true outline, and lost none."""
    high, low = _local_levels(values)
    typical = float(np.median(high - low))
    if typical <= 1e-3:
        return np.ones_like(values)
    return np.clip((high - low) / typical, 0.0, 1.0)


def _local_levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The light and dark levels around each module: the extremes of its 5 x 5 modules (wide
    enough to hold both colours almost everywhere), smoothed over as many again so that the
    threshold between them follows uneven light without jumping from module to module."""
    kernel = np.ones((5, 5), np.uint8)
    high = cv2.blur(cv2.dilate(values, kernel), (5, 5))
    low = cv2.blur(cv2.erode(values, kernel), (5, 5))
    return high, low


# The neighbours whose spill the equaliser measures, as groups that share one measured share
# of spill (row, column offsets). Shared: the 4 edge, the 4 corner and the 4 next-but-one
# neighbours, for a blur that spills alike in every direction. Directional: the pairs either
# side of a module (a symmetric blur spills alike from both), each with a share of its own:
# seen at a steep angle a symbol's modules are squeezed along one direction (a pixel a module
# or less there, three along the other), and its blur spills from the neighbours along that
# direction far more than from the others.
_SPILL_SHARED = (
    ((0, -1), (0, 1), (-1, 0), (1, 0)),
    ((-1, -1), (1, 1), (-1, 1), (1, -1)),
    ((0, -2), (0, 2), (-2, 0), (2, 0)),
)
_SPILL_DIRECTIONAL = (
    ((0, -1), (0, 1)),  # beside, in the row
    ((-1, 0), (1, 0)),  # above and below
    ((-1, -1), (1, 1)),  # one diagonal
    ((-1, 1), (1, -1)),  # the other
    ((0, -2), (0, 2)),  # next but one, in the row
    ((-2, 0), (2, 0)),  # next but one, in the column
)
# Decision-feedback rounds of the equaliser.
_EQUALISE_ROUNDS = 3


def _neighbours(x: np.ndarray, groups: tuple[tuple[tuple[int, int], ...], ...]) -> list[np.ndarray]:
    """For each group of offsets, the sum of the values there, the quiet zone outside light
    (-1)."""
    n = x.shape[0]
    p = np.pad(x, 2, constant_values=-1.0)
    return [
        sum(p[2 + dr : 2 + dr + n, 2 + dc : 2 + dc + n] for dr, dc in group)  # type: ignore[misc]
        for group in groups
    ]


def equalise(
    samples: Samples, known: np.ndarray, known_dark: np.ndarray, directional: bool = False
) -> Samples | None:
    """Module values with the blur's spill from the neighbours taken out.

    Under heavy blur (a module of 2-3 px behind a lens or JPEG) a module's sample is its own
    colour plus a share of its neighbours'. The shares are measured on the modules every
    symbol of the version has (finders, timing, alignment: their colours are known), by least
    squares, level = a * own + the sum over the groups of neighbours (_SPILL_SHARED) of b_i *
    that group + d; the data modules are then decided with the neighbours' current decisions
    subtracted (_EQUALISE_ROUNDS rounds of decision feedback), and the confidence is what is
    left of the module's own share.

    `directional`: a share for each pair of opposite neighbours (_SPILL_DIRECTIONAL), for a
    symbol seen at a steep angle, and soft feedback: a neighbour's estimate is its residual
    clipped to [-1, 1], not its sign, so that a neighbour the last round was unsure of takes
    out only part of its spill. From the exact outline of each benchmark code (seed 0), where
    the plain values or the shared shares did not read it, this read 4 more of the 100
    perspective photos (module errors down by a third to two thirds where they were 1-10%),
    5 more of 100 blurred and 13 more of 278 lowres codes, and none fewer in any category of
    photos. It is not the better model everywhere: streaks over a damaged symbol's patterns
    skew the separate shares, and a symbol the shared ones read at the margin (23 errors of
    a version 6) it did not."""
    groups = _SPILL_DIRECTIONAL if directional else _SPILL_SHARED
    spend("equalised modules", known.size)
    truth = np.where(known_dark, 1.0, -1.0)
    x = np.where(known, truth, np.where(samples.dark, 1.0, -1.0))
    spill = _neighbours(x, groups)
    columns = [x[known], *(group[known] for group in spill), np.ones(int(known.sum()))]
    try:
        solution, *_ = np.linalg.lstsq(np.stack(columns, axis=1), samples.level[known], rcond=None)
    except np.linalg.LinAlgError:
        return None
    own, shares, offset = solution[0], solution[1:-1], solution[-1]
    if not own > 0.05:
        return None
    residual = samples.level
    for _ in range(_EQUALISE_ROUNDS):
        spilled = sum(share * group for share, group in zip(shares, spill, strict=True))
        residual = (samples.level - offset - spilled) / own
        estimate = (
            np.clip(residual, -1.0, 1.0) if directional else np.where(residual > 0, 1.0, -1.0)
        )
        x = np.where(known, truth, estimate)
        spill = _neighbours(x, groups)
    return Samples(samples.values, residual, residual > 0, np.clip(np.abs(residual), 0.0, 1.0))
