"""decode(): one located QR symbol read with soft decisions, or None.

The steps, each refusing rather than guessing:

1. Geometry. Finder patterns in the region (up to six binarisations, grid.binarisations)
   give candidate (top-left, top-right, bottom-left) triples; the symbol size comes from their
   spacing (up to three candidates, and for versions 7 and up from the version information,
   which reads right even on a grid of the wrong size). When no triple reads, the region itself is
   taken as the symbol's outline (zxing-cpp's located corners), in each rotation, with the
   sizes whose finder and timing modules fit it best; and when that does not read either,
   two traced finders with a third placed where they say (seen there by correlation, or
   where the timing patterns fit: a finder covered or merged with its neighbours). Last,
   where fewer than three traced, one that did says where the other two are (along its own
   axes, seen there by correlation: grid.triples_along). Either way the grid is then
   fitted to every alignment pattern of the version (grid.fit).
2. Soft module values against a local threshold (grid.sample), a confidence each; when they
   do not read, the same values with the blur's spill from neighbouring modules taken out
   (grid.equalise), by one share for all four edge neighbours, then by a share for each
   direction (a steep view squeezes the modules along one); then, where they show ink dropped
   out of the finder, timing and alignment modules, each module's darkest point
   (grid.sample_darkest). Last, once no hypothesis of the region has read, the first
   mappings whose plain values looked blurred, from the image deconvolved round the symbol
   and equalised (_DECONVOLVE_SIGMA), and the first of them deconvolved by a lens's disc
   (_PILLBOX_RADII).
3. A grid whose timing and alignment modules are not at least 70% right is not worth error
   correction (a wrong size or pitch gets them right by chance: half).
4. Format information from both copies: the nearest BCH codeword, within distance 3 of 15
   bits (minimum distance 7, so the nearest is unique); version information (7 and up) from
   both copies, within distance 3 of 18 bits (minimum distance 8). The symbol is read as
   seen, and mirrored (transposed) unless the format as seen is within distance 1.
5. Reed-Solomon with errors and erasures within the margin `codewords` states.
6. A bit stream well formed to its padding (`bitstream`), rendered as zxing-cpp renders it.

Where the region's only finders are a QR look-alike's (three sharp finders round modules that
sample at chance where a symbol's timing and format information would be: _decoy), the search
stops there, and examine() says so (NOT_A_SYMBOL) for the cascade to rule the place out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import combinations

import cv2
import numpy as np

from worker.engine import enhance
from worker.engine.deadline import spend, work_done
from worker.engine.qr import bend, bitstream, codewords, grid
from worker.engine.qr.tables import (
    FORMAT_CODEWORDS,
    VERSION_CODEWORDS,
    alignment_centres,
    dimension,
    format_positions,
    inner_patterns,
    known_modules,
    version_positions,
)
from worker.engine.results import Quad

# Hamming distance limits for the BCH-protected fields (see the module docstring).
FORMAT_MAX_DISTANCE = 3
VERSION_MAX_DISTANCE = 3
# Share of the timing and alignment modules a grid must sample right before its data is
# worth error correction: a wrong size or pitch samples them at chance (half right), and
# real damage (glare, a stain) rarely covers more than a quarter of them.
_MIN_PATTERN_FIT = 0.7
# Share of the finder and timing modules an outline hypothesis must sample right. A glare
# spot or a stain over one finder takes up to a quarter of them (49 of about 200 for
# versions 2-10): at 0.8 the exact outline of such a symbol was refused (5 of 6 glare and
# damaged benchmark photos whose blocks were within the margin read at 0.7, none at 0.8).
# A wrong outline still has to pass the pattern fit, both BCH fields and Reed-Solomon.
_MIN_OUTLINE_FIT = 0.7
# A QR look-alike (_decoy): its three finders at the corners of a square seen square on (the
# cosine of their angle, the ratio of their spacings and of their module sizes at most these),
# sampling at least _DECOY_FINDER_FIT right with their separators (a printed look-alike's
# sample all right), its timing and alignment modules under _DECOY_PATTERN_FIT right (chance:
# half) on every grid fitted to them that samples them so...
_DECOY_COSINE = 0.15
_DECOY_LENGTH = 1.2
_DECOY_MODULE = 1.3
_DECOY_FINDER_FIT = 0.99
_DECOY_PATTERN_FIT = _MIN_PATTERN_FIT
# ...and the timing modules within _DECOY_NEAR modules of a finder at most this share right: a
# grid from the finders alone can be off far from them on a curved or steep symbol, not
# beside them (qr-photos-val 12_0, on a bottle: 0.979 of its finder modules right and 0.63 of
# its timing and alignment modules, but 14 of these 20 timing modules).
_DECOY_NEAR = 5
_DECOY_NEAR_TIMING_FIT = 0.7
# The region is searched with this much margin around it (fraction of its larger side).
_MARGIN = 0.12
# Finder search resolution: small regions are enlarged so a 2 px module survives
# thresholding, large ones reduced so contour tracing stays cheap.
_MIN_SIDE = 360
_MAX_SIDE = 1100
_MAX_UPSCALE = 4.0
# Enlarged by cubic interpolation: a module of 2-3 px keeps its middle darker than its
# edges, where linear interpolation flattens it into its neighbours. Of the codes the cascade
# located and left unread on 300 photos of qr-photos (the training set), 3 more read from
# their labelled box (8 of 81, none lost; a larger _MIN_SIDE read none more).
_UPSCALE = cv2.INTER_CUBIC
# Pairs of finders tried for a missing third: among the first (largest) few traced, of
# module sizes within this ratio, their centres 14 to 170 modules apart on a side (versions
# 1 to 40: n - 7), with a module of slack.
_PAIR_FINDERS = 4
_PAIR_MODULE_RATIO = 1.5
_MIN_SPACING = 13.0
_MAX_SPACING = 171.0
# A hypothesis whose third finder, as the square the pair makes puts it, lies further off the
# searched image than this share of the pair's distance is not tried.
_MADE_SLACK = 0.3
# A third finder is looked for within this many modules of where the pair puts it (half as
# far where the pair's rings give the perspective), by correlation with the pattern.
_THIRD_SEARCH = 3.0
# Where it is not seen (covered), the timing patterns place it: the best of the positions
# within _THIRD_SHIFT modules, _THIRD_STEP apart, where at least _MIN_PAIR_TIMING of
# their modules are right. The best of 81 positions gets 16 of a version 2's 18 timing
# modules right by chance about once in 20 (81 x 6.6e-4, the positions taken as
# independent); such a triple still has to pass the pattern fit, both BCH fields and
# Reed-Solomon.
_THIRD_SHIFT = 2.0
_THIRD_STEP = 0.5
_MIN_PAIR_TIMING = 0.85
# At most this many pair triples are read, best placed first.
_PAIR_TRIPLES = 3
# Where fewer than three finders traced, the first this many are each searched from for
# the two that did not trace (grid.triples_along), after everything else.
_ALONG_SEEDS = 2
# A module's darkest point is looked for within this many modules of its centre: ink that a
# failing print head left out (white streaks, speckle: models.synth.damage.ink_dropout) only
# lightens a dark module, and part of it stays dark. Read last: blur spills a dark neighbour
# into a light module's darkest point, so alone they read 3 to 5 fewer of the benchmark's
# damaged codes than the plain values do. After them, from each code's true outline, 80 -> 86
# of 100 damaged photos read (seed 0; 0.25 and 0.35 read one fewer), glare 81 either way.
_DARKEST_REACH = 0.3
# The darkest points are read only where they get the finder, timing and alignment modules
# (their colours known) right more often than the plain values: at most this share of the
# plain values' wrong ones, and at least this many fewer. Ink dropout lifts ink from these
# modules too; a glare spot, a stain or blur does not (the darkest points there get about as
# many wrong: no second Reed-Solomon search for nothing). On the damaged and glare photos'
# true outlines, every mapping whose darkest points read passed (10 of 88 damaged, 0 of 93
# glare mappings that got this far).
_DARKEST_GAIN = 0.75
_DARKEST_FEWEST = 3
# A symbol blurred by a Gaussian of 0.65-0.75 of a module keeps its grid (the finders trace,
# the timing and alignment modules fit), but the equaliser, a model of the spill from the
# nearest twelve modules with decision feedback, still leaves 40-60 data modules of a
# version 2 wrong: spill from two modules out and wrong feedback decisions. The image
# deconvolved by a Gaussian of _DECONVOLVE_SIGMA modules (enhance.deconvolve_defocus, over
# the symbol and _DECONVOLVE_MARGIN modules round it, at _DECONVOLVE_MODULE_PX pixels a
# module: the work image is enlarged up to 4 times for the finder search) and then equalised
# gets 0-4 of them wrong (tests/test_qr_deconvolved.py: 12 of 12 synthetic symbols at 3-4 px
# a module read, none before). Only for a mapping whose plain values get at least
# _DECONVOLVE_WRONG of the known modules wrong, read only where the deconvolved values get
# them right clearly more often (_DARKEST_GAIN, _DARKEST_FEWEST), and only after every other
# hypothesis of the region failed, for the first _DECONVOLVE_MAPPINGS such mappings: tried
# within them, the deconvolution spent the 25 units of a crop's decode
# (stages.detect.SOFT_AFTER_BUDGET_UNITS) before the triple that read it on one benchmark
# photo (curved-0055, lost in an A/B); deferred, whatever read without it reads at the same
# cost.
_DECONVOLVE_SIGMA = 0.6
_DECONVOLVE_MARGIN = 3.0
_DECONVOLVE_WRONG = 0.1
_DECONVOLVE_MODULE_PX = 4.0
_DECONVOLVE_MAPPINGS = 2
# Past that (a lens's defocus over about 1.1 modules: a point spread over a disc, whose
# spectrum's first zero, 0.61 / radius cycles a module, falls near the module grid's 0.5),
# a Gaussian model leaves the finest detail too faint or inverted; the disc (pillbox) model
# turns it back (tests/test_qr_deconvolved.py). Tried last, for the first mapping that looked
# blurred only, at each of _PILLBOX_RADII modules, read in order of the known modules they get
# right (as the Gaussian's, only where they get them clearly more right than the plain
# values), at _PILLBOX_MODULE_PX pixels a module (at 4, qr-photos-val 126_0 kept 2-3 data
# modules more wrong). The right radius matters to within 0.05 of a module and the known
# modules tell the radii apart only roughly (126_0, a 2-L: 1.05 and 1.15 get 13 known modules
# wrong each, and leave 11 and 3 data modules wrong), hence each read, a tenth of a module
# apart (synthetic discs of 1.05-1.15 modules read as well as with a twentieth).
_PILLBOX_RADII = (1.05, 1.15, 1.25)
_PILLBOX_MODULE_PX = 6.0


@dataclass(frozen=True, slots=True)
class SoftRead:
    text: str
    data: bytes
    content_type: str
    symbology_identifier: str
    ec_level: str
    version: str
    quad: Quad
    errors: int
    erasures: int


class NotASymbol:
    """examine()'s positive verdict on a place: the region's only finder patterns are a QR
    look-alike's (see _decoy), not a symbol any reader could read."""

    def __repr__(self) -> str:
        return "NOT_A_SYMBOL"


NOT_A_SYMBOL = NotASymbol()


class _OutOfTime(Exception):
    pass


@dataclass(slots=True)
class _Clock:
    work_until: float  # in work units (worker.engine.deadline.work_done)
    wall_until: float  # on time.perf_counter
    # Mappings whose plain values look blurred (_DECONVOLVE_WRONG), for the deconvolved
    # values once nothing else has read (_decode): image, mapping, size, module_px.
    blurred: list[tuple[np.ndarray, grid.Mapping, int, float]] = field(default_factory=list)
    # Each grid fitted to a finder triple: the triple and the dark modules it sampled, for
    # the look-alike verdict (_decoy), which weighs them only where no triple read.
    grids: list[tuple[grid.Triple, np.ndarray]] = field(default_factory=list)

    def check(self) -> None:
        if work_done() > self.work_until or time.perf_counter() > self.wall_until:
            raise _OutOfTime


def decode(
    gray: np.ndarray,
    region: Quad,
    *,
    budget_units: float | None = None,
    deadline_ms: float | None = None,
) -> SoftRead | None:
    """The symbol in `region` of `gray` (uint8, 2-D), or None when it cannot be read with
    certainty, within `budget_units` of work (worker.engine.deadline.work_done: about a
    millisecond of CPU each) or `deadline_ms` on the clock (what is left of the scan's
    deadline)."""
    found = examine(gray, region, budget_units=budget_units, deadline_ms=deadline_ms)
    return found if isinstance(found, SoftRead) else None


def examine(
    gray: np.ndarray,
    region: Quad,
    *,
    budget_units: float | None = None,
    deadline_ms: float | None = None,
) -> SoftRead | NotASymbol | None:
    """decode(), and where the region holds a QR look-alike rather than a symbol, the
    verdict NOT_A_SYMBOL (_decoy): no reader, at no other outline or enhancement of the
    place, reads a code there."""
    clock = _Clock(
        math.inf if budget_units is None else work_done() + budget_units,
        math.inf if deadline_ms is None else time.perf_counter() + deadline_ms / 1000.0,
    )
    if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.ndim != 2:
        return None
    try:
        corners = np.array(region, dtype=np.float64).reshape(4, 2)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(corners).all() or gray.shape[0] < 21 or gray.shape[1] < 21:
        return None
    try:
        return _decode(gray, corners, clock)
    except _OutOfTime:
        return None
    except (cv2.error, np.linalg.LinAlgError):
        # Degenerate geometry from hostile pixels (collinear finders, a singular fit) is a
        # refusal like any other: the contract is None, never an exception.
        return None


def searched(region: Quad | np.ndarray) -> tuple[float, float, float, float]:
    """The part of the image (x0, y0, x1, y1, before clipping to it) that decode() searches
    for the symbol in `region`: its bounds and a margin around them."""
    xs, ys = [float(p[0]) for p in region], [float(p[1]) for p in region]
    margin = _MARGIN * max(max(xs) - min(xs), max(ys) - min(ys)) + 4
    return min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin


def _decode(gray: np.ndarray, corners: np.ndarray, clock: _Clock) -> SoftRead | NotASymbol | None:
    lo_x, lo_y, hi_x, hi_y = searched(corners)
    x0 = max(0, math.floor(lo_x))
    y0 = max(0, math.floor(lo_y))
    x1 = min(gray.shape[1], math.ceil(hi_x))
    y1 = min(gray.shape[0], math.ceil(hi_y))
    if x1 - x0 < 21 or y1 - y0 < 21:
        return None
    crop = gray[y0:y1, x0:x1]
    side = max(crop.shape)
    scale = 1.0
    if side < _MIN_SIDE:
        scale = min(_MAX_UPSCALE, _MIN_SIDE / side)
        work = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=_UPSCALE)
        spend("resize", crop.size + work.size)
    elif side > _MAX_SIDE:
        scale = _MAX_SIDE / side
        work = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        spend("resize", crop.size + work.size)
    else:
        work = np.ascontiguousarray(crop)
    tried: set[tuple[int, int, int, int, int, int]] = set()
    finders: list[grid.Finder] = []
    for dark in grid.binarisations(work):
        clock.check()
        for finder in grid.find_finders(dark):
            if all(math.hypot(finder.x - f.x, finder.y - f.y) > 2 * f.module for f in finders):
                finders.append(finder)
        for triple in grid.triples(finders):
            key = (
                *tuple(round(v) for f in (triple.tl, triple.tr) for v in (f.x, f.y)),
                round(triple.bl.x),
                round(triple.bl.y),
            )
            if key in tried:
                continue
            tried.add(key)  # type: ignore[arg-type]
            read = _read_triple(work, triple, clock)
            if read is not None:
                return _to_page(read, scale, x0, y0)
            # The place's only finders so far, and their grids a look-alike's: the verdict
            # now, before the other triples, binarisations and outlines search it further.
            if _decoy(finders, clock.grids):
                return NOT_A_SYMBOL
    # No finder triple read: the region itself may be the symbol's outline.
    outline = (corners - [x0, y0] + 0.5) * scale - 0.5
    read = _read_outline(work, outline, clock)
    if read is not None:
        return _to_page(read, scale, x0, y0)
    # Two finders may still say where the symbol is: its third covered (a sticker, a thumb,
    # a glare spot) or merged with the modules beside it, and the region an upright box
    # around a rotated symbol, no outline of it.
    for triple in _pair_triples(work, finders, clock):
        read = _read_triple(work, triple, clock)
        if read is not None:
            return _to_page(read, scale, x0, y0)
    # Last, so that what reads without it costs what it did: the deconvolved values of the
    # first few mappings that looked blurred.
    for image, mapping, size, module_px in clock.blurred[:_DECONVOLVE_MAPPINGS]:
        late = _read_mapping(image, mapping, size, module_px, clock, deconvolved=True)
        if isinstance(late, SoftRead):
            return _to_page(late, scale, x0, y0)
    # And after them, the first one's values deconvolved by a lens's disc (_PILLBOX_RADII).
    for image, mapping, size, module_px in clock.blurred[:1]:
        late = _read_mapping(image, mapping, size, module_px, clock, deconvolved=True, pillbox=True)
        if isinstance(late, SoftRead):
            return _to_page(late, scale, x0, y0)
    if len(finders) >= 3:
        return None
    # No triple traced: one finder may still say where the others are, there but untraced
    # (a ring broken where blur lightened it, washed out by glare): grid.triples_along.
    for seed in finders[:_ALONG_SEEDS]:
        clock.check()
        for triple in grid.triples_along(work, seed):
            read = _read_triple(work, triple, clock)
            if read is not None:
                return _to_page(read, scale, x0, y0)
    return None


def _decoy(finders: list[grid.Finder], grids: list[tuple[grid.Triple, np.ndarray]]) -> bool:
    """Whether the region's finders, none of whose triples read, are a QR look-alike's:
    exactly three, at the corners of a square seen square on (_DECOY_COSINE, _DECOY_LENGTH,
    _DECOY_MODULE), and of the grids fitted to them as that square (_Grid: each size read),
    at least one samples them as finders with their separators (sharp: their one-module
    rings right, _DECOY_FINDER_FIT), and every such grid samples the timing and alignment
    modules at chance (under _DECOY_PATTERN_FIT: no grid the decoder reads), the timing
    modules beside the finders too (_DECOY_NEAR_TIMING_FIT), and two format copies that name
    no codeword both, as seen or mirrored. A symbol's format copies and the timing modules
    next to its finders lie beside them, where a grid of a wrong pitch or one that misses a
    bend still samples them right; the look-alike's (models/synth/decoys.finder_logo: three
    finders round random modules) are random. A real symbol with finders this sharp keeps
    them, but for a stain over all of them and a format copy: no reader reads a symbol whose
    format it cannot trust."""
    if len(finders) != 3:
        return False
    found = grid.triples(finders, limit=1)
    if not found:
        return False
    triple = found[0]
    tl, tr, bl = triple.tl, triple.tr, triple.bl
    u = np.array([tr.x - tl.x, tr.y - tl.y])
    v = np.array([bl.x - tl.x, bl.y - tl.y])
    lu, lv = float(np.hypot(*u)), float(np.hypot(*v))
    modules = [tl.module, tr.module, bl.module]
    if (
        abs(float(u @ v)) / (lu * lv) > _DECOY_COSINE
        or max(lu, lv) / min(lu, lv) > _DECOY_LENGTH
        or max(modules) / min(modules) > _DECOY_MODULE
    ):
        return False
    square = (tl, tr, bl)
    fitted = [_Grid.of(dark) for seen, dark in grids if (seen.tl, seen.tr, seen.bl) == square]
    sharp = [g for g in fitted if g.finder_fit >= _DECOY_FINDER_FIT]
    return bool(sharp) and all(
        g.pattern_fit < _DECOY_PATTERN_FIT
        and g.near_timing_fit <= _DECOY_NEAR_TIMING_FIT
        and not g.formats_agree
        for g in sharp
    )


@dataclass(frozen=True, slots=True)
class _Grid:
    """What a grid fitted to a finder triple sampled (_read_size), for _decoy: the share of
    the finders' modules and separators sampled right, of the timing and alignment modules,
    and of the timing modules beside the finders (_near_timing); whether the two format
    copies name one codeword, as seen or mirrored."""

    finder_fit: float
    pattern_fit: float
    near_timing_fit: float
    formats_agree: bool

    @staticmethod
    def of(dark: np.ndarray) -> _Grid:
        size = dark.shape[0]
        version = (size - 17) // 4
        known, known_dark = known_modules(version)
        right = dark == known_dark
        inner = inner_patterns(version)
        rings = known & ~inner
        rings[size - 8, 8] = False  # the dark module: the format copy's neighbour, no finder's
        return _Grid(
            float(right[rings].mean()),
            float(right[inner].mean()),
            float(right[_near_timing(size)].mean()),
            _formats_agree(dark) or _formats_agree(dark.T),
        )


def _near_timing(size: int) -> np.ndarray:
    """The timing modules within _DECOY_NEAR modules of a finder's separator (bool (size,
    size)): where a grid fitted to the finders alone samples a curved or steep symbol right."""
    near = np.zeros((size, size), dtype=bool)
    for i in (*range(8, 8 + _DECOY_NEAR), *range(size - 8 - _DECOY_NEAR, size - 8)):
        near[6, i] = near[i, 6] = True
    return near


def _formats_agree(dark: np.ndarray) -> bool:
    """Whether one format codeword is within FORMAT_MAX_DISTANCE of both copies."""
    first, second = format_positions(dark.shape[0])
    copies = (_bits(dark, first), _bits(dark, second))
    return any(
        all(bin(c ^ codeword).count("1") <= FORMAT_MAX_DISTANCE for c in copies)
        for codeword in FORMAT_CODEWORDS.values()
    )


def _to_page(read: SoftRead, scale: float, x0: int, y0: int) -> SoftRead:
    # cv2.resize maps pixel centres: work = (page + 0.5) * scale - 0.5.
    quad: Quad = tuple(  # type: ignore[assignment]
        ((x + 0.5) / scale - 0.5 + x0, (y + 0.5) / scale - 0.5 + y0) for x, y in read.quad
    )
    return SoftRead(
        read.text,
        read.data,
        read.content_type,
        read.symbology_identifier,
        read.ec_level,
        read.version,
        quad,
        read.errors,
        read.erasures,
    )


def _sizes(triple: grid.Triple) -> list[int]:
    """Candidate symbol sizes from the finder spacing, nearest first."""
    module = (triple.tl.module + triple.tr.module + triple.bl.module) / 3
    span = (
        math.hypot(triple.tr.x - triple.tl.x, triple.tr.y - triple.tl.y)
        + math.hypot(triple.bl.x - triple.tl.x, triple.bl.y - triple.tl.y)
    ) / 2
    estimate = span / module + 7
    candidates = [dimension(v) for v in range(1, 41)]
    candidates.sort(key=lambda s: abs(s - estimate))
    return [s for s in candidates[:3] if abs(s - estimate) < 0.25 * estimate + 4]


def _pair_triples(work: np.ndarray, finders: list[grid.Finder], clock: _Clock) -> list[grid.Triple]:
    """Finder triples that two of the traced finders make with a third where none traced,
    best first: the pair on one side of the symbol (the third at either end, on either
    side) or on its diagonal (the top-left on either side), each placed by _best_third. At
    most _PAIR_TRIPLES: each then goes through every check a traced triple does
    (_read_triple), so a wrong one costs time, not a misread."""
    scored: list[tuple[float, grid.Triple]] = []
    for a, b in combinations(finders[:_PAIR_FINDERS], 2):
        if max(a.module, b.module) > _PAIR_MODULE_RATIO * min(a.module, b.module):
            continue
        module = (a.module + b.module) / 2
        pa, pb = np.array([a.x, a.y]), np.array([b.x, b.y])
        along = pb - pa
        across = np.array([-along[1], along[0]])
        spacing = float(np.hypot(*along)) / module
        hypotheses: list[tuple[grid.Finder, grid.Finder, grid.Finder]] = []
        if _MIN_SPACING <= spacing <= _MAX_SPACING:
            for corner, other in ((a, b), (b, a)):
                for sign in (1.0, -1.0):
                    x, y = np.array([corner.x, corner.y]) + sign * across
                    hypotheses.append((corner, other, grid.Finder(float(x), float(y), module)))
        if _MIN_SPACING <= spacing / math.sqrt(2) <= _MAX_SPACING:
            for sign in (1.0, -1.0):
                x, y = (pa + pb) / 2 + sign * across / 2
                hypotheses.append((grid.Finder(float(x), float(y), module), a, b))
        for tl, tr, bl in hypotheses:
            clock.check()
            u = np.array([tr.x - tl.x, tr.y - tl.y])
            v = np.array([bl.x - tl.x, bl.y - tl.y])
            if u[0] * v[1] - u[1] * v[0] < 0:
                tr, bl = bl, tr
            made = next(f for f in (tl, tr, bl) if f is not a and f is not b)
            slack = _MADE_SLACK * float(np.hypot(*along))
            if not (
                -slack <= made.x <= work.shape[1] - 1 + slack
                and -slack <= made.y <= work.shape[0] - 1 + slack
            ):
                # The crop holds the located region and a margin: a third finder this far
                # outside it, even as perspective moves it, is not this symbol's.
                continue
            hypothesis = _best_third(work, grid.Triple(tl, tr, bl, 0.0), made, module)
            if hypothesis is not None:
                scored.append(hypothesis)
    scored.sort(key=lambda st: -st[0])
    return [triple for _, triple in scored[:_PAIR_TRIPLES]]


def _best_third(
    work: np.ndarray, triple: grid.Triple, made: grid.Finder, module: float
) -> tuple[float, grid.Triple] | None:
    """The hypothesis `triple` with its `made` finder where the image says it is, and a
    rank (higher first), or None where it cannot be placed.

    At each candidate size the pair's own perspective (their rings' corners, where both
    traced as quadrilaterals: grid.finder_perspective) or else the square the three
    centres make predicts where the third is. There, the finder may be seen after all (its
    ring merged with the modules beside it): where its pattern correlates best is its
    centre, ranked before any hypothesis placed otherwise. Where it is covered, the timing
    patterns place it: the position within _THIRD_SHIFT modules of the prediction where
    they fit best, at least _MIN_PAIR_TIMING of them right, and the symbol inside the
    searched image (a module of slack: the crop holds the located region and a margin)."""
    height, width = work.shape[:2]
    sizes = _sizes(triple)
    index = 0 if made is triple.tl else 1 if made is triple.tr else 2
    traced = tuple(i for i in range(3) if i != index)

    def with_made(x: float, y: float) -> grid.Triple:
        finders = [triple.tl, triple.tr, triple.bl]
        finders[index] = grid.Finder(float(x), float(y), made.module)
        return grid.Triple(*finders, 0.0)

    seen_best: tuple[float, float, float] | None = None
    predictions: list[tuple[int, np.ndarray]] = []
    for size in sizes:
        cx, cy = ((3.5, 3.5), (size - 3.5, 3.5), (3.5, size - 3.5))[index]
        mapping = grid.initial_mapping(triple, size)
        radius = _THIRD_SEARCH
        pair = grid.finder_perspective(mapping, triple, size, traced)
        if pair is not None:
            mapping, radius = pair[0], _THIRD_SEARCH / 2
        predicted = mapping(np.array([[cx, cy]]))[0]
        predictions.append((size, predicted))
        if not (
            -module <= predicted[0] <= width - 1 + module
            and -module <= predicted[1] <= height - 1 + module
        ):
            # Its centre off the searched image: so is the symbol (the timing search below
            # refuses it too), and a correlation there costs for nothing.
            continue
        seen = grid.find_finder(work, mapping, cx, cy, radius)
        if seen is not None and (seen_best is None or seen[2] > seen_best[2]):
            seen_best = seen
    if seen_best is not None:
        return 1.0 + seen_best[2], with_made(seen_best[0], seen_best[1])
    steps = np.arange(-_THIRD_SHIFT, _THIRD_SHIFT + 1e-9, _THIRD_STEP) * module
    shifts = np.stack([v.ravel() for v in np.meshgrid(steps, steps)], axis=1)
    count = len(shifts)
    best: tuple[float, grid.Triple] | None = None
    for size, predicted in predictions:
        centres = [
            np.repeat([[f.x, f.y]], count, axis=0) for f in (triple.tl, triple.tr, triple.bl)
        ]
        centres[index] = predicted + shifts
        tl, tr, bl = centres
        n = size - 7
        # The symbol's corners, 3.5 modules out from the finder centres.
        right, down = (tr - tl) / n, (bl - tl) / n
        origin = tl - 3.5 * (right + down)
        quad = np.stack(
            [origin, origin + size * right, origin + size * (right + down), origin + size * down],
            axis=1,
        )
        inside = (
            (quad[:, :, 0].min(axis=1) >= -module)
            & (quad[:, :, 1].min(axis=1) >= -module)
            & (quad[:, :, 0].max(axis=1) <= width - 1 + module)
            & (quad[:, :, 1].max(axis=1) <= height - 1 + module)
        )
        if not inside.any():
            continue
        fits = np.where(inside, grid.timing_fits(work, tl, tr, bl, size), 0.0)
        k = int(np.argmax(fits))
        if fits[k] >= _MIN_PAIR_TIMING and (best is None or fits[k] > best[0]):
            best = float(fits[k]), with_made(*centres[index][k])
    return best


# Fits a mapping for a symbol of the given size: (mapping, module size in pixels) or None.
_Fitter = Callable[[int], "tuple[grid.Mapping, float] | None"]


def _read_triple(image: np.ndarray, triple: grid.Triple, clock: _Clock) -> SoftRead | None:
    span = math.hypot(triple.tr.x - triple.tl.x, triple.tr.y - triple.tl.y)

    def fitter(size: int) -> tuple[grid.Mapping, float]:
        version = (size - 17) // 4
        mapping = grid.fit_finders(image, triple, size, alignment_centres(version))
        return mapping, span / (size - 7)

    for size in _sizes(triple):
        clock.check()
        read = _read_size(image, fitter, size, clock, refit=True, triple=triple)
        if read is not None:
            return read
    return None


def _read_outline(image: np.ndarray, corners: np.ndarray, clock: _Clock) -> SoftRead | None:
    """The region's corners taken as the symbol's outline, in any of the four rotations
    (zxing-cpp's located positions come in symbol order, a detector's in page order)."""
    sides = [float(np.hypot(*(corners[i] - corners[(i + 1) % 4]))) for i in range(4)]
    if min(sides) < 21 or max(sides) > 3 * min(sides):
        return None
    side = sum(sides) / 4
    for score, turn, size in grid.outline_sizes(image, corners):
        if score < _MIN_OUTLINE_FIT:
            break
        turned = np.roll(corners, -turn, axis=0)

        def fitter(size: int, turned: np.ndarray = turned) -> tuple[grid.Mapping, float] | None:
            version = (size - 17) // 4
            mapping = grid.fit_outline(image, turned, size, alignment_centres(version))
            return None if mapping is None else (mapping, side / size)

        clock.check()
        read = _read_size(image, fitter, size, clock, refit=True)
        if read is not None:
            return read
    return None


def _read_size(
    image: np.ndarray,
    fitter: _Fitter,
    size: int,
    clock: _Clock,
    refit: bool,
    triple: grid.Triple | None = None,
) -> SoftRead | None:
    fitted = fitter(size)
    if fitted is None:
        return None
    mapping, module_px = fitted
    read = _read_mapping(image, mapping, size, module_px, clock, triple=triple)
    if read is None:
        # Bent paper: a grid that follows the bend, only where the fitted one did not read.
        bent = bend.refine(image, mapping, size, clock.check)
        if bent is not None:
            read = _read_mapping(image, bent, size, module_px, clock)
    if read is None and triple is not None:
        # A label round a jar: bent further than refine follows (bend.wrapped).
        clock.check()
        wrapped = bend.wrapped(triple, mapping, size)
        if wrapped is not None:
            read = _read_mapping(image, wrapped, size, module_px, clock)
    if isinstance(read, _Retry):
        if refit and abs(dimension(read.version) - size) <= 0.3 * size:
            return _read_size(
                image, fitter, dimension(read.version), clock, refit=False, triple=triple
            )
        return None
    return read


@dataclass(frozen=True, slots=True)
class _Retry:
    """The version information names another version than the one sampled."""

    version: int


def _readings(
    image: np.ndarray,
    mapping: grid.Mapping,
    size: int,
    module_px: float,
    plain: grid.Samples,
    clock: _Clock,
) -> Iterator[tuple[grid.Samples, np.ndarray]]:
    """The module values to read and the neighbourhood contrast their confidences are weighed
    by, each only when the ones before did not read (most symbols never need the later ones),
    and only where it decides some data module otherwise than the plain values (else there is
    nothing new to try): as sampled; with the blur's spill from the neighbours taken out
    (grid.equalise: by shared shares, then by a share for each direction); and each module's
    darkest point (grid.sample_darkest, _DARKEST_REACH), where it samples the modules every
    symbol of the version has clearly better than the plain values (_DARKEST_GAIN,
    _DARKEST_FEWEST)."""
    version = (size - 17) // 4
    known, known_dark = known_modules(version)
    # One neighbourhood contrast for both the plain and the equalised values (the same).
    kept = grid.contrast_kept(plain.values)
    yield plain, kept
    tried = [plain.dark[~known]]
    # The shared shares first, then a share for each direction (grid.equalise).
    for directional in (False, True):
        equalised = grid.equalise(plain, known, known_dark, directional=directional)
        if equalised is None or any(
            np.array_equal(equalised.dark[~known], before) for before in tried
        ):
            continue
        tried.append(equalised.dark[~known])
        yield equalised, kept
    plain_wrong = int((plain.dark[known] != known_dark[known]).sum())
    if plain_wrong >= _DARKEST_FEWEST:
        clock.check()
        darkest = grid.sample_darkest(image, mapping, size, module_px, _DARKEST_REACH)
        darkest_wrong = int((darkest.dark[known] != known_dark[known]).sum())
        if (
            darkest_wrong <= _DARKEST_GAIN * plain_wrong
            and plain_wrong - darkest_wrong >= _DARKEST_FEWEST
        ):
            yield darkest, grid.contrast_kept(darkest.values)
    if plain_wrong >= _DECONVOLVE_WRONG * int(known.sum()):
        clock.blurred.append((image, mapping, size, module_px))


def _deconvolved(
    image: np.ndarray,
    mapping: grid.Mapping,
    size: int,
    module_px: float,
    pillbox: float | None = None,
) -> grid.Samples:
    """The module values of `image` deconvolved over the symbol's bounds and
    _DECONVOLVE_MARGIN modules round them (the rest of the image is left as it is: only the
    symbol is sampled): by a Gaussian of _DECONVOLVE_SIGMA modules at _DECONVOLVE_MODULE_PX
    pixels a module, or, given `pillbox` (a radius in modules), by that disc at
    _PILLBOX_MODULE_PX."""
    n = float(size)
    corners = mapping(np.array([(0.0, 0.0), (n, 0.0), (n, n), (0.0, n)]))
    margin = _DECONVOLVE_MARGIN * module_px
    height, width = image.shape
    x0 = max(0, math.floor(corners[:, 0].min() - margin))
    y0 = max(0, math.floor(corners[:, 1].min() - margin))
    x1 = min(width, math.ceil(corners[:, 0].max() + margin))
    y1 = min(height, math.ceil(corners[:, 1].max() + margin))
    restored = image.copy()
    if x1 - x0 < 8 or y1 - y0 < 8:
        return grid.sample(restored, mapping, size, module_px)
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    # Deconvolved at a few pixels a module: the work image is enlarged up to 4 times for the
    # finder search, and the filter's cost grows with its pixels.
    target = _DECONVOLVE_MODULE_PX if pillbox is None else _PILLBOX_MODULE_PX
    factor = min(1.0, target / module_px)
    small = crop
    if factor < 1.0:
        small = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        spend("resize", crop.size + small.size)
    if pillbox is None:
        sharp = enhance.deconvolve_defocus(small, _DECONVOLVE_SIGMA * module_px * factor)
    else:
        sharp = enhance.deconvolve_pillbox(small, pillbox * module_px * factor)
    if factor < 1.0:
        sharp = cv2.resize(sharp, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_CUBIC)
        spend("resize", small.size + sharp.size)
    restored[y0:y1, x0:x1] = sharp
    return grid.sample(restored, mapping, size, module_px)


def _deconvolved_readings(
    image: np.ndarray,
    mapping: grid.Mapping,
    size: int,
    module_px: float,
    plain: grid.Samples,
    clock: _Clock,
    pillbox: bool = False,
) -> Iterator[tuple[grid.Samples, np.ndarray]]:
    """The deconvolved values, equalised (the deconvolution leaves some spill), where they
    get the known modules right clearly more often than the `plain` values: by the Gaussian,
    or with `pillbox` by each disc of _PILLBOX_RADII, those that get the known modules right
    most often first (they are the calibration target: the symbol's own blur is not known)."""
    version = (size - 17) // 4
    known, known_dark = known_modules(version)

    def wrong(samples: grid.Samples) -> int:
        return int((samples.dark[known] != known_dark[known]).sum())

    plain_wrong = wrong(plain)
    candidates = []
    for radius in _PILLBOX_RADII if pillbox else (None,):
        clock.check()
        candidates.append(_deconvolved(image, mapping, size, module_px, pillbox=radius))
    for sharp in sorted(candidates, key=wrong):
        sharp_wrong = wrong(sharp)
        if sharp_wrong > _DARKEST_GAIN * plain_wrong or plain_wrong - sharp_wrong < _DARKEST_FEWEST:
            break
        equalised = grid.equalise(sharp, known, known_dark)
        if equalised is not None:
            yield equalised, grid.contrast_kept(sharp.values)


def _read_mapping(
    image: np.ndarray,
    mapping: grid.Mapping,
    size: int,
    module_px: float,
    clock: _Clock,
    deconvolved: bool = False,
    pillbox: bool = False,
    triple: grid.Triple | None = None,
) -> SoftRead | _Retry | None:
    """`triple`: the finders `mapping` was fitted to, where it was (what it samples is
    recorded for the look-alike verdict, _decoy)."""
    version = (size - 17) // 4
    plain = grid.sample(image, mapping, size, module_px)
    if triple is not None:
        clock.grids.append((triple, plain.dark))
    clock.check()
    _, known_dark = known_modules(version)
    if version >= 7:
        # The version information sits beside the finders, where even a grid of the wrong
        # size samples right: it names the size to sample again at.
        for seen in (plain.dark, plain.dark.T):
            found = read_version(seen)
            if found is not None and found != version:
                return _Retry(found)
    inner = inner_patterns(version)
    if (plain.dark[inner] == known_dark[inner]).mean() < _MIN_PATTERN_FIT:
        return None
    readings = (
        _deconvolved_readings(image, mapping, size, module_px, plain, clock, pillbox)
        if deconvolved
        else _readings(image, mapping, size, module_px, plain, clock)
    )
    for samples, kept in readings:
        for mirrored, level, mask in _orientations(samples.dark):
            clock.check()
            dark = samples.dark.T if mirrored else samples.dark
            weighed = samples.confidence * kept
            confidence = weighed.T if mirrored else weighed
            if version >= 7:
                found = read_version(dark)
                if found is None:
                    continue
                if found != version:
                    return _Retry(found)
            stream, conf = codewords.stream(dark, confidence, version, mask)
            spend("stream modules", size * size)
            clock.check()
            corrected = codewords.correct(stream, conf, version, level)
            if corrected is None:
                continue
            try:
                content = bitstream.parse(corrected.data, version)
            except bitstream.StreamError:
                continue
            n = float(size)
            module_corners = [(0.0, 0.0), (n, 0.0), (n, n), (0.0, n)]
            if mirrored:
                module_corners = [(0.0, 0.0), (0.0, n), (n, n), (n, 0.0)]
            pts = mapping(np.array(module_corners))
            quad: Quad = tuple((float(x), float(y)) for x, y in pts)  # type: ignore[assignment]
            return SoftRead(
                text=content.text,
                data=content.data,
                content_type=content.content_type,
                symbology_identifier=content.symbology_identifier,
                ec_level=level,
                version=str(version),
                quad=quad,
                errors=corrected.errors,
                erasures=corrected.erasures,
            )
    return None


def _orientations(dark: np.ndarray) -> list[tuple[bool, str, int]]:
    """(mirrored, level, mask) to try: the symbol as seen, and mirrored (read transposed)
    unless the format information as seen is within distance 1 of a codeword (a random
    15 bits are so with probability 1.6%: the orientation is settled)."""
    out = []
    straight = read_format(dark)
    if straight is not None:
        out.append((False, straight[0], straight[1]))
        if straight[2] <= 1:
            return out
    mirrored = read_format(dark.T)
    if mirrored is not None:
        out.append((True, mirrored[0], mirrored[1]))
        if straight is not None and mirrored[2] < straight[2]:
            out.reverse()
    return out


def _bits(dark: np.ndarray, positions: list[tuple[int, int]]) -> int:
    return sum(int(dark[r, c]) << i for i, (r, c) in enumerate(positions))


def read_format(dark: np.ndarray) -> tuple[str, int, int] | None:
    """(level, mask, distance) from the nearer of the two format copies, or None."""
    first, second = format_positions(dark.shape[0])
    copies = (_bits(dark, first), _bits(dark, second))
    best: tuple[int, int, tuple[str, int]] | None = None
    for key, codeword in FORMAT_CODEWORDS.items():
        d1, d2 = (bin(c ^ codeword).count("1") for c in copies)
        rank = (min(d1, d2), d1 + d2)
        if best is None or rank < best[:2]:
            best = (rank[0], rank[1], key)
    if best is None or best[0] > FORMAT_MAX_DISTANCE:
        return None
    return best[2][0], best[2][1], best[0]


def read_version(dark: np.ndarray) -> int | None:
    """The version from the nearer of the two version copies (versions 7..40), or None."""
    first, second = version_positions(dark.shape[0])
    copies = (_bits(dark, first), _bits(dark, second))
    best: tuple[int, int] | None = None
    for version, codeword in VERSION_CODEWORDS.items():
        distance = min(bin(c ^ codeword).count("1") for c in copies)
        if best is None or distance < best[0]:
            best = (distance, version)
    if best is None or best[0] > VERSION_MAX_DISTANCE:
        return None
    return best[1]
