"""The soft decoder's grid for bent paper (worker/engine/qr/bend.py, issue 19): a symbol
printed on a page bent around a cylinder, whose module pitch changes across the bend as no
homography can follow, reads through the bent grid; a flat symbol's grid is left where it
was; a grid of the wrong size is not bent at all."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segno

from models.synth.corpus import corpus_sample
from worker.bench.false_reads import render
from worker.engine.qr import bend, decode, grid
from worker.engine.qr.decoder import _Clock, _read_mapping
from worker.engine.qr.tables import alignment_centres

TEXT = "INV-2026-0042 bent"
BORDER = 4  # modules of quiet zone rendered around the symbol


def bent(
    modules: np.ndarray, px: float, radius: float, start: float, rng: np.random.Generator
) -> np.ndarray:
    """The symbol (`px` pixels a module, quiet zone included) on a page bent around a
    vertical cylinder of `radius` times its width, seen head-on from 12 widths away: its
    left edge `start` degrees round from the crest, the right edge further (models.synth's
    curved pages, without the page). Lens blur and sensor noise as a phone adds them."""
    flat = render(modules, 8, border=BORDER)
    flat = cv2.resize(flat, None, fx=px / 8, fy=px / 8, interpolation=cv2.INTER_AREA)
    h, w = flat.shape
    r, depth = radius * w, 12.0 * w
    theta0 = np.deg2rad(start)

    def across(theta: np.ndarray) -> np.ndarray:
        return r * np.sin(theta) * depth / (depth + r * (1 - np.cos(theta)))

    left = float(across(np.array(theta0)))
    out_w = int(np.ceil(float(across(np.array(theta0 + w / r))) - left)) + 8
    ys, xs = np.mgrid[0 : h + 8, 0:out_w].astype(np.float64)
    u = xs + 0.5 - 4 + left
    # u = d r sin(t) / (d + r (1 - cos(t))) solved for t (the side facing the camera).
    a, b, c = depth * r, r * u, (depth + r) * u
    theta = np.arcsin(np.clip(c / np.hypot(a, b), -1, 1)) - np.arctan2(b, a)
    factor = depth / (depth + r * (1 - np.cos(theta)))
    src_x = (theta - theta0) * r - 0.5
    src_y = (ys + 0.5 - 4 - h / 2) / factor + h / 2 - 0.5
    image = cv2.remap(
        flat.astype(np.float32),
        src_x.astype(np.float32),
        src_y.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=255,
    )
    image = cv2.GaussianBlur(image, (0, 0), 0.6) + rng.normal(0, 2.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def whole(image: np.ndarray) -> tuple[tuple[float, float], ...]:
    h, w = image.shape
    return ((0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h)))


def symbol(version: int) -> np.ndarray:
    made = segno.make_qr(TEXT, version=version, error="M", boost_error=False)
    return np.array(made.matrix, dtype=bool)


def finder_grid(image: np.ndarray, size: int) -> grid.Mapping:
    """The decoder's own grid for the symbol filling `image`: its finders, the homography
    through them, refined to the alignment patterns (grid.fit_finders)."""
    for dark in grid.binarisations(image):
        for triple in grid.triples(grid.find_finders(dark)):
            return grid.fit_finders(image, triple, size, alignment_centres((size - 17) // 4))
    raise AssertionError("no finder triple")


def no_limit() -> None:
    pass


def read_but_not_by_the_fitted_grid(
    version: int, px: float, radius: float, start: float
) -> tuple[np.ndarray, int, grid.Mapping, _Clock]:
    """A bent symbol the decoder reads, and the grid it fits to its finders and alignment
    patterns, which does not read it: the image, the symbol's size, that grid, a clock."""
    image = bent(symbol(version), px, radius, start, np.random.default_rng(3))
    read = decode(image, whole(image))
    assert read is not None and read.text == TEXT
    size = 17 + 4 * version
    mapping = finder_grid(image, size)
    clock = _Clock(np.inf, np.inf)
    assert _read_mapping(image, mapping, size, px, clock) is None
    return image, size, mapping, clock


@pytest.mark.parametrize(
    ("version", "px", "radius", "start"),
    [(2, 4.0, 1.5, 20.0), (2, 6.0, 3.0, 40.0)],
)
def test_a_bent_symbol_reads_through_the_bent_grid_only(
    version: int, px: float, radius: float, start: float
) -> None:
    # The decoder's grid as fitted (finders and alignment patterns) does not read it; the
    # same grid bent does.
    image, size, mapping, clock = read_but_not_by_the_fitted_grid(version, px, radius, start)
    bent_grid = bend.refine(image, mapping, size, no_limit)
    assert bent_grid is not None
    again = _read_mapping(image, bent_grid, size, px, clock)
    assert again is not None and getattr(again, "text", None) == TEXT


def test_a_symbol_drifting_most_at_its_foreshortened_edge_is_bent() -> None:
    """The benchmark's curved-0038 (seed 0: a version 8 page bent 57 degrees away from the
    camera): the fitted grid holds its finders and alignment patterns, but past the last
    alignment column, where the page turns away, it drifts off the last three columns. The
    first round's quadratic over 4 x 4 blocks averages that to 0.22 modules of drift; the
    grid is bent all the same, and reads (bend._MIN_DRIFT)."""
    sample = corpus_sample("curved", 38)
    gray = cv2.imdecode(np.frombuffer(sample.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    code = sample.codes[0]
    read = decode(gray, code.quad)
    assert read is not None and read.data == code.payload


def test_a_flat_symbol_is_not_bent() -> None:
    """Its first round measures no drift worth following: no second reading of it."""
    image = render(symbol(6), 5, border=BORDER)
    assert bend.refine(image, finder_grid(image, 41), 41, no_limit) is None


def test_a_grid_of_the_wrong_size_is_not_bent() -> None:
    image = render(symbol(6), 5, border=BORDER)
    for size in (37, 45):
        assert bend.refine(image, finder_grid(image, size), size, no_limit) is None


def test_it_stops_when_the_decoders_time_is_up() -> None:
    image = bent(symbol(2), 4.0, 1.5, 20.0, np.random.default_rng(3))

    class OutOfTime(Exception):
        pass

    def spent() -> None:
        raise OutOfTime

    with pytest.raises(OutOfTime):
        bend.refine(image, finder_grid(image, 25), 25, spent)


def traced_triple(image: np.ndarray) -> grid.Triple:
    """The decoder's first finder triple in `image` (grid.binarisations, grid.triples)."""
    for dark in grid.binarisations(image):
        for triple in grid.triples(grid.find_finders(dark)):
            return triple
    raise AssertionError("no finder triple")


@pytest.mark.parametrize(
    ("version", "px", "radius", "start"),
    [(2, 6.0, 0.6, -20.0), (4, 9.0, 0.8, 0.0), (3, 6.0, 0.45, -40.0)],
)
def test_a_label_round_a_jar_reads_through_the_cylinder(
    version: int, px: float, radius: float, start: float
) -> None:
    """A symbol on a label round a jar (radius under its width: it turns 70-130 degrees
    from edge to edge, as on qr-photos-val 146, 65 and 25): the grid through its finders,
    even bent (refine follows half a module of drift, not this), misses its far side; the
    cylinder fitted to the finders' centres and corners (bend.wrapped) reads it."""
    image, size, mapping, clock = read_but_not_by_the_fitted_grid(version, px, radius, start)
    refined = bend.refine(image, mapping, size, no_limit)
    assert refined is None or _read_mapping(image, refined, size, px, clock) is None
    wrapped = bend.wrapped(traced_triple(image), mapping, size)
    assert wrapped is not None
    again = _read_mapping(image, wrapped, size, px, clock)
    assert again is not None and getattr(again, "text", None) == TEXT


def test_a_flat_symbol_is_not_wrapped() -> None:
    """Its cylinder is the grid the decoder fitted already: not read again."""
    image = render(symbol(3), 6, border=BORDER)
    assert bend.wrapped(traced_triple(image), finder_grid(image, 29), 29) is None


def test_a_grid_of_the_wrong_size_is_not_wrapped() -> None:
    """The finders' corners at another size's module points fit no cylinder."""
    image = bent(symbol(3), 6.0, 0.6, -20.0, np.random.default_rng(3))
    for size in (25, 33):
        assert bend.wrapped(traced_triple(image), finder_grid(image, size), size) is None
