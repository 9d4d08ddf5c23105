"""The decoder's finder search (worker.engine.qr.grid.find_finders) over a binarisation full
of specks: the same finders as tracing every border, for less than the tracing costs; and
over one whose many dark-light changes are a few large shapes, for what tracing costs.

A noisy photo, a halftone or JPEG blocks thresholded locally leave 10,000 and more specks in a
decoder's crop; tracing all their borders took 10-40 ms a binarisation, up to six a place, and
was the largest single cost of the corpus's slowest images after the detector (issue 19). The
modules of a symbol at 2-3 px change as often, and are few shapes: erasing the specks first
there cost up to twice the tracing it was to save.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import segno

from worker.engine.qr import grid


def _speckled(seed: int, side: int = 1000) -> np.ndarray:
    """A binarisation (dark = 255) of two symbols, one inverted, on a field of specks (single
    pixels and small blobs, some in the symbols' quiet zones and holes), and rings and
    bullseyes of the specks' own making."""
    rng = np.random.default_rng(seed)
    dark = np.where(rng.random((side, side)) < 0.22, 255, 0).astype(np.uint8)
    dark = cv2.medianBlur(dark, 3) | np.where(rng.random((side, side)) < 0.03, 255, 0).astype(
        np.uint8
    )
    for text, module, x, y, invert in (
        ("SPECKS-1", 6, 80, 120, False),
        ("SPECKS-2" * 4, 5, 520, 430, True),
    ):
        modules = np.array(segno.make_qr(text, error="m").matrix, dtype=np.uint8) * 255
        symbol = cv2.resize(
            np.pad(modules, 2), None, fx=module, fy=module, interpolation=cv2.INTER_NEAREST
        )
        if invert:
            symbol = 255 - symbol
        h, w = symbol.shape
        dark[y : y + h, x : x + w] = symbol
    for _ in range(40):
        # Rings with a speck inside: a hole with two islands, or one, is no finder (or is).
        cx, cy = (int(v) for v in rng.integers(20, side - 20, 2))
        cv2.circle(dark, (cx, cy), int(rng.integers(5, 14)), 255, 2)
        cv2.circle(dark, (cx, cy), int(rng.integers(1, 4)), 255, -1)
    return dark


def test_the_same_finders_as_tracing_every_border() -> None:
    for seed in range(6):
        dark = _speckled(seed)
        found = grid.find_finders(dark)
        assert found == grid._trace(dark)
        assert len(found) >= 3


def test_a_binarisation_without_a_hole_has_no_finder() -> None:
    rng = np.random.default_rng(3)
    dots = np.zeros((600, 600), np.uint8)
    dots[rng.random((600, 600)) < 0.05] = 255
    dots[::2, ::2] = 0  # single pixels and pairs: no dark pixel encloses light
    assert grid.find_finders(dots) == grid._trace(dots) == []


def _cpu_ms(call: object, dark: np.ndarray) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.thread_time()
        call(dark)  # type: ignore[operator]
        best = min(best, time.thread_time() - started)
    return best * 1000.0


def test_a_speckled_binarisation_costs_less_than_tracing_it() -> None:
    dark = _speckled(0)

    def trace(image: np.ndarray) -> object:
        return cv2.findContours(image, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)

    search = _cpu_ms(grid.find_finders, dark)
    tracing = _cpu_ms(trace, dark)
    assert search < 0.7 * tracing, (search, tracing)


def _fine_symbols(seed: int, side: int = 600) -> np.ndarray:
    """A binarisation (dark = 255) of four version 19 symbols at 3 px a module filling it:
    more dark-light changes than grid._SPECKLED, in a few hundred components."""
    dark = np.zeros((side, side), np.uint8)
    for i, (x, y) in enumerate(((0, 0), (300, 0), (0, 300), (300, 300))):
        qr = segno.make_qr(f"FINE-{seed}-{i}" * 40, error="l", version=19)
        modules = np.array(qr.matrix, dtype=np.uint8) * 255
        symbol = cv2.resize(np.pad(modules, 2), None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
        h, w = symbol.shape
        dark[y : y + h, x : x + w] = symbol
    return dark


def test_specks_are_counted_a_pixel_and_shapes_are_not() -> None:
    dots = np.zeros((600, 600), np.uint8)
    dots[::3, ::3] = 255  # single pixels, one in nine
    assert grid._specks(dots) == pytest.approx(1 / 9, rel=0.05)
    block = np.zeros((600, 600), np.uint8)
    block[100:500, 100:500] = 255
    assert grid._specks(block) < 0.001
    assert grid._specks(_speckled(0)) >= grid._SPECKS
    assert grid._specks(_fine_symbols(0)) < grid._SPECKS


def test_many_changes_in_few_shapes_cost_what_tracing_costs() -> None:
    dark = _fine_symbols(0)
    assert np.count_nonzero(dark[::4, 1:] != dark[::4, :-1]) > grid._SPECKLED * dark.size
    found = grid.find_finders(dark)
    assert found == grid._trace(dark)
    assert len(found) >= 12

    def trace(image: np.ndarray) -> object:
        return cv2.findContours(image, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)

    search = _cpu_ms(grid.find_finders, dark)
    tracing = _cpu_ms(trace, dark)
    # Erasing the specks first (as every binarisation past _SPECKLED was) cost twice the
    # tracing here.
    assert search < 1.3 * tracing, (search, tracing)
