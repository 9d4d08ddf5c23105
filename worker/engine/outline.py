"""A QR code's outline, to a fraction of a module, from a detector box and the finder
patterns that survive in it.

The soft decoder (worker.engine.qr) reads a symbol from three finder patterns it finds
itself, or else from the region it is handed taken as the symbol's outline; that path needs
the outline right to about half a module (measured on the benchmark's glare and damaged
photos: the true outline read 23 codes, the same outline with 2% of its side of noise on each
corner read none). A detector's corners are several modules off (3 to 15 on glare photos),
and a glare spot, a stain or a tear that hides one finder leaves the decoder no triple.

Two finder patterns that survive say most of the outline: they sit on two corners of the
symbol's square (one side apart, or across its diagonal), their size gives the module, and
their spacing the symbol's size. The corner they do not pin is a guess (a right angle from
the two, a few modules off in perspective), and one finder alone says no outline at all:
there the symbol's own edges do (rectify.refine_outline, the lines along its outermost dark
modules), taken in each rotation with the sizes the finders' module allows, where every
surviving finder sits at a finder pattern's place. On the benchmark's damaged and glare
photos these read a code whose other two finders a stain hid and one whose unpinned corner
the guess put 2.5 modules off. A place with no finder at all gets no outline: the edges
alone read a code whose finders pen strokes hid, but on downscaled uploads, whose finders
the search misses because they are blurred, they cost the decoder a failed search at most
places (3.7 s more CPU over the benchmark's 1,700 images, for that one code).

Every outline is then fitted to the pixels: each corner is moved, a module and then a
fraction of one at a time, to where the modules every symbol of that size shares (finders,
separators, timing and alignment patterns) and the light quiet zone around it agree best
with the image. The outlines are ranked by that agreement; a wrong one costs the decoder one
failed search, never a misread (the decoder checks everything it reads by Reed-Solomon with
its own margin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from worker.engine import rectify
from worker.engine.deadline import spend
from worker.engine.qr import grid
from worker.engine.qr.tables import dimension, known_modules

# The box is searched with this much margin (share of its longer side): a detector box can
# miss a module or two of the symbol, and the quiet zone is part of the fit.
MARGIN = 0.25
# Finder search resolution, as the decoder's own search: a small region is enlarged so a
# 2-pixel module survives thresholding, a large one reduced so contour tracing stays cheap.
_MIN_SIDE = 480
_MAX_SIDE = 1100
_MAX_UPSCALE = 4.0
# Two finders are one side apart when the line through them is within this many degrees of
# an axis of the square they imply, across its diagonal within this many of 45 degrees.
_ANGLE_SLACK = 22.0
# Finders of one symbol have one module size (perspective moves it a little).
_MODULE_RATIO = 1.5
# Symbol sizes tried per finder pair: the nearest to the spacing's estimate and the next.
_SIZES_PER_PAIR = 2
# At most this many outline hypotheses are ranked, and this many more than asked for fitted.
_MAX_HYPOTHESES = 8
_SPARE_FITS = 1
# The fit moves each corner by this many modules, then by the smaller steps.
_STEPS = (1.0, 0.5, 0.25)
_MAX_MOVES_PER_STEP = 8
# An outline whose known modules agree with the image less than this (about a correlation,
# 1.0 a clean symbol) is not handed on: a decoy (text, a logo), a wrong size or the third
# finder on the wrong corner scores below it. On the benchmark's glare and damaged photos
# every outline the decoder read scored 0.6 or more and was the best of its box.
MIN_AGREEMENT = 0.55
# ...and a hypothesis that agrees less than this before the fit is not fitted: two finder
# look-alikes (logos, a table's corners) rarely line up with a symbol's other patterns.
MIN_START = 0.25
# The edges are traced in a view this many pixels a side (rectify.refine_outline; the zoom's
# 600 costs twice as much, and the fit moves the corners by a quarter module anyway).
_EDGE_VIEW = 400
# A finder found inside the edges must sit within this many modules of a finder pattern's
# place for the rotation and size to be tried: a finder look-alike (a logo's square, a
# decoy's) or a size a version off puts it several modules away.
FINDER_REACH = 2.0
# One finder and the edges' far corner (_one_finder_hypotheses): the symbol's two sides
# through the finder's corner run along its ring's outer sides, and its two corners there lie
# this many of its sizes out (in the finder's modules: perspective stretches or squeezes the
# far side), searched every _ONE_FINDER_STEP modules; the fit then moves each corner by up to
# a module at a time, and from 2 modules off it reached the same outline (qr-photos-val
# 60_0). Sizes are those from _ONE_FINDER_SIZES of the diagonal's span in finder modules
# over the square root of two (60_0: 91 modules for a size 77).
_ONE_FINDER_REACH = (0.7, 1.6)
_ONE_FINDER_STEP = 4.0
_ONE_FINDER_SIZES = (0.6, 1.15)
# The best of each size's search is ranked with the other hypotheses; this many sizes kept.
_ONE_FINDER_KEEP = 2
_ONE_FINDER_FIT = (2.0,)


@dataclass(frozen=True, slots=True)
class Outline:
    """A symbol's outer corners (clockwise in the image, page pixels of the image searched),
    its size in modules, and how well its known modules agree with the image."""

    corners: np.ndarray  # (4, 2) float
    size: int
    agreement: float


def outlines(
    gray: np.ndarray,
    box: tuple[float, float, float, float],
    limit: int = 1,
    *,
    one_finder: bool = False,
) -> list[Outline]:
    """The best `limit` outlines of a symbol with at least one visible finder pattern, and no
    finder triple, in `box` (x0, y0, x1, y1 in `gray` pixels), best first; empty when none
    agrees well enough. `one_finder`: where a single finder traced and the edges disagree
    with it, also the outlines its ring's sides and the edges' far corner allow
    (_one_finder_hypotheses: a search, tens of work units, for places that hold a whole
    symbol, such as the detectors' joined boxes)."""
    x0, y0, x1, y1 = box
    margin = MARGIN * max(x1 - x0, y1 - y0)
    left, top = max(0, math.floor(x0 - margin)), max(0, math.floor(y0 - margin))
    right = min(gray.shape[1], math.ceil(x1 + margin))
    bottom = min(gray.shape[0], math.ceil(y1 + margin))
    if right - left < 21 or bottom - top < 21:
        return []
    crop = gray[top:bottom, left:right]
    side = max(crop.shape)
    scale = 1.0
    if side < _MIN_SIDE:
        scale = min(_MAX_UPSCALE, _MIN_SIDE / side)
    elif side > _MAX_SIDE:
        scale = _MAX_SIDE / side
    work = crop
    if scale != 1.0:
        interpolation = cv2.INTER_LINEAR if scale > 1.0 else cv2.INTER_AREA
        work = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=interpolation)
        spend("resize", crop.size + work.size)
    centre = np.array((((x0 + x1) / 2 - left) * scale, ((y0 + y1) / 2 - top) * scale))
    finders = _finders(work)
    if not finders or grid.triples(finders, limit=1):
        # No finder: nothing vouches for the place (see above). Three finders of one symbol:
        # the decoder finds them itself (it searched this place before it came here), and
        # an outline from two of them adds nothing.
        return []
    hypotheses = _hypotheses(finders, centre)[:_MAX_HYPOTHESES]
    # The symbol's own edges say the corners no finder pins: the one under a glare spot,
    # the two a stain hides with their finders.
    quad = np.array(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), np.float32)
    edges = rectify.refine_outline(gray, quad, side=_EDGE_VIEW)
    if edges is not None:
        in_work = (edges.astype(np.float64) - (left, top)) * scale
        hypotheses += _edge_hypotheses(in_work, finders)
    if not hypotheses and not (one_finder and edges is not None and len(finders) == 1):
        return []
    module = float(np.mean([f.module for f in finders]))
    blurred = cv2.GaussianBlur(work, (0, 0), max(0.5, 0.3 * module))
    spend("blur", work.size)
    if one_finder and edges is not None and len(finders) == 1:
        hypotheses += _one_finder_hypotheses(blurred, finders[0], in_work)
    # Only the hypotheses that agree best as they are get fitted (the fit is most of the
    # cost here): the third finder on the wrong corner, or a size off by four modules,
    # already puts the finders and the timing patterns where the image has none.
    scored = [(float(agreement(blurred, c[None], n)[0]), c, n) for c, n in hypotheses]
    ranked = sorted((h for h in scored if h[0] >= MIN_START), key=lambda h: -h[0])
    fitted = [fit(blurred, corners, size) for _, corners, size in ranked[: limit + _SPARE_FITS]]
    found: list[Outline] = []
    for corners, size, score in sorted(fitted, key=lambda f: -f[2]):
        if score < MIN_AGREEMENT or len(found) >= limit:
            break
        page = corners / scale + (left, top)
        if any(np.abs(page - other.corners).max() < 1.0 for other in found):
            continue
        found.append(Outline(page, size, score))
    return found


def _finders(work: np.ndarray) -> list[grid.Finder]:
    """Finder patterns in the decoder's binarisations, the next one only while exactly one
    is found (contour tracing is most of the cost here)."""
    finders: list[grid.Finder] = []
    for dark in grid.binarisations(work):
        for finder in grid.find_finders(dark):
            if all(math.hypot(finder.x - f.x, finder.y - f.y) > 2 * f.module for f in finders):
                finders.append(finder)
        if len(finders) != 1:
            # Two or more: enough. None in the first binarisation (which follows uneven
            # light, glare's included): a decoy or an unreadable blur, mostly, where the
            # other two cost as much again and find none either.
            break
    return finders


def _hypotheses(finders: list[grid.Finder], centre: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """(corners, size) of the symbols each pair of finders implies, pairs of the most alike
    finders first; the corners clockwise from the symbol's top-left (the corner between two
    finders), so that the fit compares the image with the symbol's patterns the right way
    round. Two finders one side apart: the symbol lies on the side of them where the box's
    centre is. Either way the third finder is at one of two corners: both are tried."""
    pairs = []
    for i, a in enumerate(finders):
        for b in finders[i + 1 :]:
            ratio = max(a.module, b.module) / min(a.module, b.module)
            if ratio <= _MODULE_RATIO:
                pairs.append((ratio, a, b))
    pairs.sort(key=lambda p: p[0])
    out: list[tuple[np.ndarray, int]] = []
    for _, a, b in pairs:
        module = (a.module + b.module) / 2
        first, second = np.array((a.x, a.y)), np.array((b.x, b.y))
        step = second - first
        span = float(np.hypot(*step))
        if span < 8 * module:  # finders of one symbol are at least 14 modules apart
            continue
        across = np.array((-step[1], step[0]))
        angle = math.degrees(math.atan2(step[1], step[0])) % 90.0
        if min(angle, 90.0 - angle) < _ANGLE_SLACK:
            if across @ (centre - (first + second) / 2) < 0:
                across = -across
            # The finders' centres on the square's corners 0 and 1; the third on 3 or 2.
            centres = np.array((first, second, second + across, first + across))
            empty = (2, 3)
            estimate = span / module + 7
        elif abs(angle - 45.0) < _ANGLE_SLACK:
            middle = (first + second) / 2
            centres = np.array((first, middle + across / 2, second, middle - across / 2))
            empty = (1, 3)
            estimate = span / math.sqrt(2.0) / module + 7
        else:
            continue
        sizes = sorted((dimension(v) for v in range(1, 41)), key=lambda n: abs(n - estimate))
        for size in sizes[:_SIZES_PER_PAIR]:
            if abs(size - estimate) > 0.2 * estimate + 3:
                continue
            # Finder centres sit 3.5 modules inside the corners.
            middle = centres.mean(axis=0)
            corners = middle + (centres - middle) * (size / (size - 7.0))
            for missing in empty:
                # The top-left finder is the one across the square from the corner without.
                start = (missing + 2) % 4
                out.append((_clockwise(np.roll(corners, -start, axis=0)), size))
    return out


def _side(corners: np.ndarray) -> float:
    return float(np.mean(np.hypot(*(corners - np.roll(corners, -1, axis=0)).T)))


def _edge_hypotheses(edges: np.ndarray, finders: list[grid.Finder]) -> list[tuple[np.ndarray, int]]:
    """(corners, size): the symbol's own edges (rectify.refine_outline, in the finders'
    pixels) in each rotation, with the sizes the finders' module implies, where every finder
    inside the edges sits at a finder pattern's place."""
    clockwise = _clockwise(edges)
    inside = [
        (f.x, f.y)
        for f in finders
        if cv2.pointPolygonTest(clockwise.astype(np.float32), (f.x, f.y), False) >= 0
    ]
    if not inside:
        return []
    centres = np.array(inside)
    module = float(np.mean([f.module for f in finders]))
    estimate = _side(clockwise) / module
    sizes = sorted((dimension(v) for v in range(1, 41)), key=lambda n: abs(n - estimate))
    out = []
    for size in sizes[:_SIZES_PER_PAIR]:
        if abs(size - estimate) > 0.2 * estimate + 3:
            continue
        # Finder centres, 3.5 modules in from the top-left, top-right and bottom-left corners.
        places = np.array(((3.5, 3.5), (size - 3.5, 3.5), (3.5, size - 3.5))) / size
        turns = np.stack([np.roll(clockwise, -turn, axis=0) for turn in range(4)])
        expected = _project(turns, places)  # (4, 3, 2)
        for turn in range(4):
            gaps = np.hypot(*(centres[:, None, :] - expected[turn][None]).transpose(2, 0, 1))
            if (gaps.min(axis=1) <= FINDER_REACH * module).all():
                out.append((turns[turn], size))
    return out


def _one_finder_hypotheses(
    blurred: np.ndarray, finder: grid.Finder, edges: np.ndarray
) -> list[tuple[np.ndarray, int]]:
    """(corners, size): a symbol with one finder traced (the other two merged with a shadow
    or the text beside them) whose edges (rectify.refine_outline) are right only far from it
    (a shadow across the top, a caption's line along the side: qr-photos-val 60_0). The
    finder's ring gives the corner it sits at and the directions of the two sides through
    it (perspective and all, as the symbol's own outer edge); the edges' corner across from
    it gives the opposite one. The two corners left lie along those sides: searched every
    _ONE_FINDER_STEP modules, for each candidate size, by how well the symbol's known modules
    agree with the image (agreement); the best _ONE_FINDER_KEEP sizes' outlines, fitted."""
    if len(finder.corners) != 4:
        return []
    centre = np.array((finder.x, finder.y))
    ring = np.array(finder.corners, np.float64)
    # The edges' corner across from the one nearest the finder (the farthest can be a
    # wrong edge's end, run off along a shadow).
    far = edges[(int(np.argmin(np.hypot(*(edges - centre).T))) + 2) % 4]
    # The symbol's corner is the ring's corner farthest out from the far one.
    corner = ring[int(np.argmax((ring - centre) @ (centre - far)))]
    neighbours = sorted(
        (r for r in ring if not np.array_equal(r, corner)), key=lambda r: np.hypot(*(r - corner))
    )[:2]
    directions = [(r - corner) / max(1e-6, float(np.hypot(*(r - corner)))) for r in neighbours]
    span = float(np.hypot(*(far - corner))) / finder.module / math.sqrt(2.0)
    low, high = (span * share for share in _ONE_FINDER_SIZES)
    found: list[tuple[float, np.ndarray, int]] = []
    for size in (dimension(v) for v in range(1, 41)):
        if not low <= size <= high:
            continue
        reach = np.arange(*(size * share for share in _ONE_FINDER_REACH), _ONE_FINDER_STEP)
        # Every _ONE_FINDER_STEP modules, then every module around the best of those.
        score, first, second = _along(
            blurred, corner, far, directions, finder.module, size, reach, reach
        )
        near = np.arange(-_ONE_FINDER_STEP / 2, _ONE_FINDER_STEP / 2 + 0.5, 1.0)
        score, first, second = _along(
            blurred, corner, far, directions, finder.module, size, first + near, second + near
        )
        found.append(
            (
                score,
                _clockwise(_corners(corner, far, directions, finder.module, first, second)),
                size,
            )
        )
    found.sort(key=lambda f: -f[0])
    # The ring's sides set the directions only to a degree or two, a module or more off at
    # the far corners: a first fit at _ONE_FINDER_FIT modules a move (outlines then fits
    # them as any other hypothesis, a module at a time and finer).
    kept = found[:_ONE_FINDER_KEEP]
    return [(fit(blurred, corners, size, _ONE_FINDER_FIT)[0], size) for _, corners, size in kept]


def _corners(
    corner: np.ndarray,
    far: np.ndarray,
    directions: list[np.ndarray],
    module: float,
    first: np.ndarray | float,
    second: np.ndarray | float,
) -> np.ndarray:
    """Outlines (K, 4, 2), or one (4, 2) for scalar reaches: `corner`, the corners `first`
    and `second` modules out along `directions`, and `far` across from it."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    one = first.ndim == 0
    first, second = first.reshape(-1), second.reshape(-1)
    count = len(first)
    outlines = np.stack(
        (
            np.repeat(corner[None], count, axis=0),
            corner + (first * module)[:, None] * directions[0],
            np.repeat(far[None], count, axis=0),
            corner + (second * module)[:, None] * directions[1],
        ),
        axis=1,
    )
    return outlines[0] if one else outlines


def _along(
    blurred: np.ndarray,
    corner: np.ndarray,
    far: np.ndarray,
    directions: list[np.ndarray],
    module: float,
    size: int,
    firsts: np.ndarray,
    seconds: np.ndarray,
) -> tuple[float, float, float]:
    """The best agreement over every pair of reaches (modules) and that pair."""
    first, second = (a.ravel() for a in np.meshgrid(firsts, seconds))
    scores = agreement(blurred, _corners(corner, far, directions, module, first, second), size)
    best = int(np.argmax(scores))
    return float(scores[best]), float(first[best]), float(second[best])


def _clockwise(points: np.ndarray) -> np.ndarray:
    """The corners in clockwise order (image axes, y down), from the first one given (a
    symbol and its mirror image share the patterns compared, so either way round fits)."""
    a, b, c = points[0], points[1], points[2]
    cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return points if cross > 0 else points[[0, 3, 2, 1]]


@lru_cache(maxsize=64)
def _pattern(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-square positions of the modules every symbol of `size` shares and of a ring of
    quiet zone just outside it, and their colours standardised (light positive) and
    weighted so that the finders, the timing patterns, the alignment patterns and the quiet
    zone count alike: the finders alone (most of the modules) fit a symbol a size too small
    or large nearly as well, the timing patterns between them do not."""
    known, dark = known_modules((size - 17) // 4)
    timing = np.zeros_like(known)
    timing[6, 8 : size - 8] = timing[8 : size - 8, 6] = True
    finder = np.zeros_like(known)
    for r, c in ((0, 0), (0, size - 8), (size - 8, 0)):
        finder[r : r + 8, c : c + 8] = True
    groups = np.where(finder, 0, np.where(timing, 1, 2))[known]
    rows, cols = np.nonzero(known)
    points = [np.stack([cols + 0.5, rows + 0.5], axis=1)]
    light = [np.where(dark[rows, cols], -1.0, 1.0)]
    edge = np.arange(size) + 0.5
    for fixed in (np.full(size, -0.5), np.full(size, size + 0.5)):
        points += [np.stack([edge, fixed], axis=1), np.stack([fixed, edge], axis=1)]
        light += [np.ones(size), np.ones(size)]
    groups = np.concatenate([groups, np.full(4 * size, 3)])
    labels = np.concatenate(light)
    labels = (labels - labels.mean()) / labels.std()
    counts = np.bincount(groups, minlength=4).astype(np.float64)
    weights = 1.0 / counts[groups]
    weights *= len(weights) / weights.sum()
    weighted = labels * weights
    # Zero mean, so that a brighter or darker patch (glare, a shadow) adds nothing.
    return np.concatenate(points) / size, weighted - weighted.mean()


def _project(corners: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """`unit` square points (M, 2) through the homographies onto each of `corners` (K, 4, 2):
    (K, M, 2). The square-to-quadrilateral map in closed form (Heckbert)."""
    x, y = corners[..., 0], corners[..., 1]
    dx1, dx2, dx3 = x[:, 1] - x[:, 2], x[:, 3] - x[:, 2], x[:, 0] - x[:, 1] + x[:, 2] - x[:, 3]
    dy1, dy2, dy3 = y[:, 1] - y[:, 2], y[:, 3] - y[:, 2], y[:, 0] - y[:, 1] + y[:, 2] - y[:, 3]
    den = dx1 * dy2 - dx2 * dy1
    den = np.where(np.abs(den) < 1e-9, 1e-9, den)
    g = (dx3 * dy2 - dx2 * dy3) / den
    h = (dx1 * dy3 - dx3 * dy1) / den
    a, b = x[:, 1] - x[:, 0] + g * x[:, 1], x[:, 3] - x[:, 0] + h * x[:, 3]
    d, e = y[:, 1] - y[:, 0] + g * y[:, 1], y[:, 3] - y[:, 0] + h * y[:, 3]
    u, v = unit[None, :, 0].astype(np.float32), unit[None, :, 1].astype(np.float32)
    g, h, a, b, d, e = (c.astype(np.float32)[:, None] for c in (g, h, a, b, d, e))
    x0, y0 = x[:, 0:1].astype(np.float32), y[:, 0:1].astype(np.float32)
    w = g * u + h * v + 1.0
    w = np.where(np.abs(w) < 1e-6, 1e-6, w)
    px = (a * u + b * v + x0) / w
    py = (d * u + e * v + y0) / w
    return np.stack([px, py], axis=-1)


def agreement(image: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """For each outline in `corners` (K, 4, 2), the correlation of the image's values at the
    known modules and quiet zone with their colours: 1.0 a perfect symbol, 0 no relation."""
    unit, labels = _pattern(size)
    points = _project(corners, unit)
    values = cv2.remap(
        image, points[..., 0], points[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    spend("outline modules", values.size)
    # The labels are standardised (zero mean): the correlation is their dot product with
    # the values over the values' spread.
    spread = values.std(axis=1, dtype=np.float64)
    dot = values @ labels.astype(np.float32)
    return dot / len(labels) / np.where(spread < 1e-6, np.inf, spread)


_MOVES = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy], np.float64)


def fit(
    image: np.ndarray, corners: np.ndarray, size: int, steps: tuple[float, ...] = _STEPS
) -> tuple[np.ndarray, int, float]:
    """`corners` moved, one corner at a time and the best move first, by each of `steps`
    (modules) in turn, to where the symbol's known modules agree best with `image`; the
    corners, the size and that agreement."""
    corners = np.asarray(corners, np.float64)
    best = float(agreement(image, corners[None], size)[0])
    module = float(np.mean(np.hypot(*(corners - np.roll(corners, -1, axis=0)).T))) / size
    for step in steps:
        moves = _MOVES * step * module
        for _ in range(_MAX_MOVES_PER_STEP):
            candidates = np.repeat(corners[None], 4 * len(moves), axis=0)
            for corner in range(4):
                block = slice(corner * len(moves), (corner + 1) * len(moves))
                candidates[block, corner] += moves
            scores = agreement(image, candidates, size)
            pick = int(np.argmax(scores))
            if scores[pick] <= best + 1e-4:
                break
            best, corners = float(scores[pick]), candidates[pick]
    return corners, size, best
