"""A smooth module grid for bent paper (issue 19): the fitted grid (grid.Mapping, a
homography refined to the alignment patterns) composed with a low-order polynomial
displacement in module coordinates, fitted to where each block of the symbol is seen.

A page bent around a cylinder (a sheet curling off the desk, held in a hand) is seen
through a mapping whose pitch changes across the bend as the cosine of the surface angle:
no homography follows it, and the grid drifts by half a module or more away from the points
it was fitted to (the finders and, from version 2, one alignment pattern in the corner). The
drift is smooth, so it is measured block by block and fitted by a polynomial:

1. The image is resampled on the module grid (with a margin of quiet zone) and each module
   decided from its central half; the modules every symbol of the version has (finders,
   separators, timing, alignment) take their true colour.
2. Each block of modules is matched against the ideal rendering of its decisions (normalised
   correlation, within a module and a quarter either way at first): the block's shift. A
   block whose decisions are wrong where the grid drifted most matches poorly and is left
   out; the rounds after it sample it better.
3. The shifts, weighted by their match, are fitted by a polynomial of degree 2 to 4 (more
   blocks, more terms), and the grid moved by it. Three rounds, each searching closer; the
   first with 4 x 4 large blocks and a quadratic.

Only tried where the plain grid did not read (decoder._read_size), so a clean symbol pays
nothing; every round checks the decoder's clock. A grid is not bent where it is not this
symbol's (timing and alignment at chance, format or version information unread: most grids
the decoder fails on stop there), where the first round finds it flat (a damaged or blurred
symbol, a decoy: no second reading for nothing), or where it would take a field larger than
a bend plausibly drifts.

On the benchmark's curved photos (build/bench-corpus, 2026-12-07) it read 3 of the 23 codes
the cascade left unread, from their true or located outline without a time limit; the
others' grids stayed wrong or never got this far (no finder triple: versions 14-23 at 2 px
a module).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import cv2
import numpy as np

from worker.engine.deadline import spend
from worker.engine.qr import grid
from worker.engine.qr.tables import inner_patterns, known_modules

# Samples a module in the rectified image the blocks are matched in.
_SAMPLES = 4
# Light modules of quiet zone rendered and matched around the symbol: its outer edge is
# evidence too, where the finders' outer rings meet it.
_QUIET = 2
# A block's search, in modules either way, per round: wide first (the drift in the middle of
# a bent symbol reaches a module), then closer as the grid follows.
_REACH = (1.25, 0.75, 0.5)
# Modules a block spans (about), and the most blocks a side. The first round takes 4 x 4
# larger blocks and a quadratic field: enough to tell a flat symbol from a bent one (most
# grids that get this far are flat: decoys with valid format information, damaged codes) at
# a fraction of the finer rounds' matches, and a larger block matches more surely where
# the drift left many of its modules decided wrong.
_BLOCK = 8
_MAX_PER_SIDE = 10
_FIRST_PER_SIDE = 4
# Normalised correlation a block's match must reach to be used.
_MIN_MATCH = 0.45
# Share of the blocks that must match for a round's fit to be taken.
_MIN_MATCHED = 0.4
# Share of the timing and alignment modules the starting grid must sample right: a wrong size
# or pitch samples them at chance (half); the bent symbols that read start at 0.9 or more.
_MIN_FIT = 0.6
# The least displacement (modules) the first round must find somewhere on the symbol for the
# grid to be bent: a flat symbol that did not read (damage, blur, a decoy with valid format
# information) measures less, and is not resampled and corrected again for nothing. Most of
# the benchmark's bent symbols that read through it measure 0.4 or more; one bent away from
# the camera drifts off only its last columns, past the last alignment pattern, which the
# first round's quadratic over 4 x 4 blocks averages to 0.22 (curved-0038, seed 0). At 0.15
# rather than 0.25 the curved photos read 86 -> 88 of 100 through the engine, no category
# fewer, no more CPU (see the commit that set it).
_MIN_DRIFT = 0.15
# The largest displacement (modules) the fitted field may put anywhere on the symbol: a
# grid that needs more is not this symbol's.
_MAX_DRIFT = 2.5
# A label round a cylinder (Wrapped): the turns (radians from edge to edge) whose models are
# fitted to the finders, the best taken (the model multiplies its sine and cosine terms, so
# the turn only sets the ratio of their shapes: 0, a parabola, to 1.5, 86 degrees). Of the
# three jar and bent-card codes of qr-photos-val each read at three of these or more.
_WRAP_BENDS = (0.0, 0.5, 1.0, 1.5)
# The most (modules) the best model may leave any finder point off: on the photos the ones
# that read were within 0.15-0.2, a wrong size or a finder of another symbol misses by
# modules.
_WRAP_MAX_ERROR = 0.5
# The least (modules) the model must move some module centre from the fitted grid for it to
# be read: a flat symbol's cylinder is the same grid, read again for nothing.
_WRAP_MIN_MOVE = 0.3
# A finder's traced corner is matched to the ideal corner within this angle (radians) of it,
# as seen from the finder's centre (the four are 90 degrees apart).
_WRAP_MAX_ANGLE = 0.6


class Bent(grid.Mapping):
    """`base` composed with a polynomial displacement in module coordinates: a module
    point p maps to base(p + field(p))."""

    def __init__(self, base: grid.Mapping, size: int, degree: int, coeffs: np.ndarray) -> None:
        super().__init__(base.homography)
        self.base = base
        self.size = size
        self.degree = degree
        self.coeffs = coeffs  # (terms, 2)

    def field(self, points: np.ndarray) -> np.ndarray:
        return _basis(points, self.size, self.degree) @ self.coeffs

    def __call__(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return self.base(pts + self.field(pts))


def _basis(points: np.ndarray, size: int, degree: int) -> np.ndarray:
    """Monomials of total degree <= `degree` in coordinates centred and scaled to [-1, 1]."""
    half = size / 2.0
    u = (points[:, 0] - half) / half
    v = (points[:, 1] - half) / half
    return np.stack([u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)], axis=1)


def _degree(blocks: int) -> int:
    # Each term takes two unknowns per axis from the blocks' shifts: keep a few blocks a term.
    if blocks >= 45:
        return 4
    if blocks >= 20:
        return 3
    return 2


def refine(
    image: np.ndarray, mapping: grid.Mapping, size: int, check: Callable[[], None]
) -> Bent | None:
    """The grid of a `size`-module symbol bent to follow the paper, starting from `mapping`,
    or None where it is not worth bending (see _worth_bending) or too few blocks match to
    say how it bends. `check` raises once the decoder's time is up."""
    version = (size - 17) // 4
    known, known_dark = known_modules(version)
    fine = min(_MAX_PER_SIDE, max(_FIRST_PER_SIDE, round(size / _BLOCK)))
    current: grid.Mapping = mapping
    bent: Bent | None = None
    for step, reach in enumerate(_REACH):
        check()
        seen = _rectify(image, current, size)
        spend("bend rectify", seen.size)
        dark = grid.classify(_module_values(seen, size)).dark
        if bent is None and not _worth_bending(dark, version, known_dark):
            return None
        per_side = _FIRST_PER_SIDE if step == 0 else fine
        degree = _degree(per_side * per_side)
        terms = (degree + 1) * (degree + 2) // 2
        ideal = _render(np.where(known, known_dark, dark))
        centres, shifts, weights = _match_blocks(seen, ideal, _blocks(size, per_side), reach)
        spend("bend match", seen.size)
        if len(centres) < max(terms + 2, _MIN_MATCHED * per_side * per_side):
            return bent
        base = bent.field(centres) if bent is not None else np.zeros_like(centres)
        coeffs = _fit(centres, base + shifts, weights, size, degree)
        if coeffs is None:
            return bent
        edges = np.linspace(0, size, per_side + 1)
        lattice = np.stack(np.meshgrid(edges, edges), axis=-1).reshape(-1, 2)
        drift = float(np.abs(_basis(lattice, size, degree) @ coeffs).max())
        if drift > _MAX_DRIFT or (bent is None and drift < _MIN_DRIFT):
            return None
        bent = Bent(mapping, size, degree, coeffs)
        current = bent
    return bent


def _worth_bending(dark: np.ndarray, version: int, known_dark: np.ndarray) -> bool:
    """Whether the grid as fitted is this symbol's, only drifting: its timing and alignment
    modules sampled right more often than by chance (a wrong size or pitch gets half), and
    the format information and, from version 7, the version information (beside the
    finders, where the fit holds) read as a symbol of this version. Most grids the decoder
    fails on (wrong sizes, triples of decoys) stop here, at the cost of one resampling."""
    # Imported here: the decoder imports this module to call refine.
    from worker.engine.qr.decoder import read_format, read_version

    inner = inner_patterns(version)
    if (dark[inner] == known_dark[inner]).mean() < _MIN_FIT:
        return False
    if read_format(dark) is None and read_format(dark.T) is None:
        return False
    return version < 7 or version in (read_version(dark), read_version(dark.T))


def _module_values(seen: np.ndarray, size: int) -> np.ndarray:
    """Each module's value: the mean of the central half module of its samples in `seen`."""
    symbol = slice(_QUIET * _SAMPLES, (_QUIET + size) * _SAMPLES)
    core = seen[symbol, symbol]
    quarter = _SAMPLES // 4
    centre = core.reshape(size, _SAMPLES, size, _SAMPLES)[
        :, quarter : _SAMPLES - quarter, :, quarter : _SAMPLES - quarter
    ]
    return np.ascontiguousarray(centre.mean(axis=(1, 3)), dtype=np.float32)


def _rectify(image: np.ndarray, mapping: grid.Mapping, size: int) -> np.ndarray:
    """The symbol and its quiet zone resampled on the module grid, _SAMPLES a module. The
    mapping is smooth: evaluated at the module centres and interpolated between them (a
    sixteenth of the points grid.rectify maps, the most of a round's time there). Enlarged
    by cv2.resize, whose sample k of the enlarged lattice lies at (k + 0.5) / _SAMPLES - 0.5
    of the coarse one: exactly where the module centres put it."""
    centres = np.arange(size + 2 * _QUIET, dtype=np.float64) - _QUIET + 0.5
    gx, gy = np.meshgrid(centres, centres)
    pts = mapping(np.stack([gx.ravel(), gy.ravel()], axis=1)).astype(np.float32)
    n = len(centres)
    side = n * _SAMPLES
    mx = cv2.resize(pts[:, 0].reshape(n, n), (side, side), interpolation=cv2.INTER_LINEAR)
    my = cv2.resize(pts[:, 1].reshape(n, n), (side, side), interpolation=cv2.INTER_LINEAR)
    seen = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return seen.astype(np.float32)


def _render(dark: np.ndarray) -> np.ndarray:
    """The symbol as decided, quiet zone around it, _SAMPLES samples a module: 0 dark, 255
    light, softened by about a sample as a lens softens the photo."""
    padded = np.pad(dark, _QUIET, constant_values=False)
    ideal = np.where(padded, 0.0, 255.0).astype(np.float32)
    ideal = np.kron(ideal, np.ones((_SAMPLES, _SAMPLES), dtype=np.float32))
    return cv2.GaussianBlur(ideal, (0, 0), 0.6 * _SAMPLES / 2)


def _blocks(size: int, per_side: int) -> list[tuple[float, float, int, int, int, int]]:
    """Each block's centre (module coordinates) and its sample bounds (x0, y0, x1, y1) in
    the rectified image; blocks on the symbol's border take in its quiet zone."""
    edges = np.linspace(0, size, per_side + 1)
    out = []
    for y0, y1 in itertools.pairwise(edges):
        for x0, x1 in itertools.pairwise(edges):
            bx0 = round((x0 + (0 if x0 == 0 else _QUIET)) * _SAMPLES)
            by0 = round((y0 + (0 if y0 == 0 else _QUIET)) * _SAMPLES)
            bx1 = round((x1 + (2 * _QUIET if x1 == size else _QUIET)) * _SAMPLES)
            by1 = round((y1 + (2 * _QUIET if y1 == size else _QUIET)) * _SAMPLES)
            out.append(((x0 + x1) / 2, (y0 + y1) / 2, bx0, by0, bx1, by1))
    return out


def _match_blocks(
    seen: np.ndarray,
    ideal: np.ndarray,
    blocks: list[tuple[float, float, int, int, int, int]],
    reach: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres, shifts, weights) of the blocks that match: each block's centre in module
    coordinates, where its ideal rendering is found in `seen` relative to where the grid
    puts it (modules), and its correlation."""
    pad = math.ceil(reach * _SAMPLES)
    seen_padded = cv2.copyMakeBorder(seen, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    centres: list[tuple[float, float]] = []
    shifts: list[tuple[float, float]] = []
    weights: list[float] = []
    for cx, cy, bx0, by0, bx1, by1 in blocks:
        template = ideal[by0:by1, bx0:bx1]
        window = seen_padded[by0 : by1 + 2 * pad, bx0 : bx1 + 2 * pad]
        scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
        _, score, _, (ix, iy) = cv2.minMaxLoc(scores)
        # A peak on the search's edge may lie beyond it: not a measurement. A template of
        # one colour scores nothing (0 or NaN): nothing to place it by.
        if not score >= _MIN_MATCH or ix in (0, scores.shape[1] - 1):
            continue
        if iy in (0, scores.shape[0] - 1):
            continue
        dx = ix + _parabola(scores[iy, ix - 1], score, scores[iy, ix + 1]) - pad
        dy = iy + _parabola(scores[iy - 1, ix], score, scores[iy + 1, ix]) - pad
        centres.append((cx, cy))
        shifts.append((dx / _SAMPLES, dy / _SAMPLES))
        weights.append(score)
    return np.array(centres).reshape(-1, 2), np.array(shifts).reshape(-1, 2), np.array(weights)


def _parabola(left: float, centre: float, right: float) -> float:
    """The sub-sample offset of a peak from its two neighbours' scores."""
    den = float(left) - 2 * centre + float(right)
    if den >= 0:
        return 0.0
    return min(0.5, max(-0.5, 0.5 * (float(left) - float(right)) / den))


def _fit(
    centres: np.ndarray, targets: np.ndarray, weights: np.ndarray, size: int, degree: int
) -> np.ndarray | None:
    """Weighted least squares of the polynomial field through the blocks' displacements,
    lightly damped, then once more without the blocks it leaves over a third of a module
    off (a block matched to its neighbour's look-alike)."""
    basis = _basis(centres, size, degree)
    keep = np.ones(len(centres), dtype=bool)
    coeffs: np.ndarray | None = None
    for _ in range(2):
        w = (weights * keep)[:, None] ** 2
        lhs = basis.T @ (basis * w) + 1e-3 * np.eye(basis.shape[1])
        try:
            coeffs = np.linalg.solve(lhs, basis.T @ (targets * w))
        except np.linalg.LinAlgError:
            return None
        error = np.linalg.norm(basis @ coeffs - targets, axis=1)
        keep = error < max(1.0 / 3.0, 2.5 * float(np.median(error)))
        if keep.sum() < basis.shape[1] + 2:
            return None
    return coeffs


class Wrapped(grid.Mapping):
    """A symbol on a label wrapped round a cylinder (a jar, a bottle, a can) whose axis runs
    along the symbol's columns (`axis` 0) or rows (1), as a camera sees it: a module point
    maps through the 3 x 4 `projection` of its place on the surface. Round the cylinder the
    symbol turns `bend` radians from one edge to the other; the place is (sin(bend t) / bend,
    (1 - cos(bend t)) / bend^2, s, 1), t and s the coordinates across and along the axis,
    centred and over the size. Any radius, any turn of the cylinder to the camera and either
    side of it facing it are the projection's: it multiplies the sine and cosine terms as it
    likes (bend 0 is the limit, a parabola round the axis)."""

    def __init__(self, projection: np.ndarray, bend: float, axis: int, size: int) -> None:
        super().__init__(np.eye(3))
        self.projection = projection
        self.bend = bend
        self.axis = axis
        self.size = size

    def __call__(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        seen = _surface(pts, self.size, self.bend, self.axis) @ self.projection.T
        with np.errstate(divide="ignore", invalid="ignore"):
            out = seen[:, :2] / seen[:, 2:3]
        # As grid.Mapping: points behind the camera sample off the image, not NaN.
        return np.nan_to_num(out, nan=-1e4, posinf=-1e4, neginf=-1e4)


def _surface(points: np.ndarray, size: int, bend: float, axis: int) -> np.ndarray:
    """Module points' places on the cylinder (Wrapped), up to the projection."""
    t = (points[:, axis] - size / 2) / size
    s = (points[:, 1 - axis] - size / 2) / size
    if bend < 1e-6:
        across, depth = t, t * t / 2
    else:
        across, depth = np.sin(bend * t) / bend, (1 - np.cos(bend * t)) / bend**2
    return np.stack([across, depth, s, np.ones_like(t)], axis=1)


def _project(src: np.ndarray, dst: np.ndarray, size: int, bend: float, axis: int) -> Wrapped | None:
    """The Wrapped mapping whose projection takes module points `src` nearest pixels `dst`
    (the direct linear transform: the 3 x 4 matrix by SVD, the pixels normalised first)."""
    surface = _surface(src, size, bend, axis)
    mean = dst.mean(axis=0)
    scale = max(float(np.abs(dst - mean).mean()), 1e-9)
    x, y = ((dst - mean) / scale).T
    zero = np.zeros_like(surface)
    rows = np.vstack(
        [
            np.hstack([surface, zero, -x[:, None] * surface]),
            np.hstack([zero, surface, -y[:, None] * surface]),
        ]
    )
    try:
        _, _, vt = np.linalg.svd(rows)
    except np.linalg.LinAlgError:
        return None
    back = np.array([[scale, 0.0, mean[0]], [0.0, scale, mean[1]], [0.0, 0.0, 1.0]])
    projection = back @ vt[-1].reshape(3, 4)
    if not np.isfinite(projection).all():
        return None
    return Wrapped(projection, bend, axis, size)


def _finder_points(triple: grid.Triple, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The three finders' centres and outer corners: module points and where they are seen
    (pixels), or None where a ring did not trace as a quadrilateral. Each seen corner is the
    ideal corner in its direction from its finder's centre, as the three centres' affine map
    turns them: on a bent label each finder has its own scale (grid.finder_perspective
    matches by position and refuses it)."""
    finders = (triple.tl, triple.tr, triple.bl)
    if any(len(f.corners) != 4 for f in finders):
        return None
    linear = grid.initial_mapping(triple, size).homography[:2, :2]
    src = [grid.finder_centres(size)]
    dst = [np.array([[f.x, f.y] for f in finders])]
    for finder, ideal in zip(finders, grid.finder_corner_points(size), strict=True):
        centre = np.array([finder.x, finder.y])
        seen = np.array(finder.corners, dtype=np.float64)
        towards = (ideal - ideal.mean(axis=0)) @ linear.T
        ideal_angle = np.arctan2(towards[:, 1], towards[:, 0])
        away = seen - centre
        seen_angle = np.arctan2(away[:, 1], away[:, 0])
        apart = np.abs((seen_angle[:, None] - ideal_angle[None, :] + np.pi) % (2 * np.pi) - np.pi)
        match = apart.argmin(axis=1)
        if len(set(match.tolist())) != 4 or apart.min(axis=1).max() > _WRAP_MAX_ANGLE:
            return None
        src.append(ideal[match])
        dst.append(grid.ring_edge(seen, centre))
    return np.vstack(src), np.vstack(dst)


def wrapped(triple: grid.Triple, mapping: grid.Mapping, size: int) -> Wrapped | None:
    """The grid of a `size`-module symbol on a label round a cylinder, fitted to its three
    finders' centres and outer corners (`triple`), or None where the finders are not all
    quadrilaterals, no model puts every one of their points within _WRAP_MAX_ERROR modules,
    or the best puts no module centre _WRAP_MIN_MOVE modules away from `mapping` (the
    grid the decoder fitted and read already: a flat symbol).

    A label round a jar turns away from the camera on both sides: its columns (or rows)
    stay straight, the others curve, and the pitch shrinks towards the edges. A homography
    through the finders places the far corner, away from all three (in a version 1 no
    alignment pattern corrects it; from version 2 one does, in the corner, but not the
    middle), a module or more off; bend.refine follows a drift of up to half a module, and
    no more: past that the modules it matches blocks by are decided wrong. The cylinder,
    fitted to the finders' fifteen points, carries their curvature across the symbol."""
    points = _finder_points(triple, size)
    if points is None:
        return None
    src, dst = points
    module = (triple.tl.module + triple.tr.module + triple.bl.module) / 3
    best: tuple[float, Wrapped] | None = None
    for axis in (0, 1):
        for bend in _WRAP_BENDS:
            model = _project(src, dst, size, bend, axis)
            if model is None:
                continue
            error = float(np.linalg.norm(model(src) - dst, axis=1).max())
            if best is None or error < best[0]:
                best = error, model
    spend("wrap fit", 2 * len(_WRAP_BENDS) * len(src))
    if best is None or best[0] > _WRAP_MAX_ERROR * module:
        return None
    centres = np.arange(size, dtype=np.float64) + 0.5
    gx, gy = np.meshgrid(centres, centres)
    modules = np.stack([gx.ravel(), gy.ravel()], axis=1)
    moved = float(np.linalg.norm(best[1](modules) - mapping(modules), axis=1).max())
    if moved < _WRAP_MIN_MOVE * module:
        return None
    return best[1]
