"""Faint codes: hazy or faded prints whose dark and light modules are 15-25 grey levels
apart, under a few grey levels of sensor noise (models.synth's `low_contrast` category).

The soft decoder finds a symbol's finder patterns in binarisations of its region. On such a
code, a local threshold splits every module into specks of noise, no finder keeps its three
nested squares, and the decoder read the code only when handed its exact outline. Smoothed
over about a third of a module first, the same threshold gives the finders back: the code is
read from a box around it, as a detector gives. The photos are seed 7 (never in the
benchmark, seed 0).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.synth.corpus import corpus_sample
from worker.engine import qr
from worker.engine.results import Quad


def faint_photo(index: int) -> tuple[np.ndarray, Quad, bytes]:
    sample = corpus_sample("low_contrast", index, seed=7)
    gray = cv2.imdecode(np.frombuffer(sample.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    code = sample.codes[0]
    return gray, tuple(map(tuple, code.quad)), code.payload  # type: ignore[return-value]


def box_around(quad: Quad, grow: float = 0.15) -> Quad:
    """An upright box around the code with a margin: what a detector hands the decoder."""
    points = np.array(quad)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    margin = grow * max(x1 - x0, y1 - y0)
    return (
        (x0 - margin, y0 - margin),
        (x1 + margin, y0 - margin),
        (x1 + margin, y1 + margin),
        (x0 - margin, y1 + margin),
    )


@pytest.mark.parametrize("index", [2, 8, 23, 46])
def test_a_faint_noisy_code_is_read_from_a_box_around_it(index: int) -> None:
    gray, outline, payload = faint_photo(index)
    contrast = np.percentile(gray[_inside(outline, gray.shape)], [5, 95])
    assert contrast[1] - contrast[0] < 40  # the faint print the test is about
    read = qr.decode(gray, box_around(outline))
    assert read is not None and read.data == payload


def _inside(quad: Quad, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.array(quad, np.int32), 1)
    return mask.astype(bool)
