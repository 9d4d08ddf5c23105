"""Codes blurred past zxing-cpp's reach, read by our soft decoder from a deblurred crop.

A defocused or shaken code keeps too little of its finder patterns' shape for zxing-cpp's
locator or for the soft decoder's own finder search in the blurred crop; deconvolved (the
detector stages' `rectified_defocus`, `rectified_deshake` and `box_deshake` crops), it gives
them back, and the soft decoder reads the whole crop where zxing-cpp read nothing
(worker.engine.stages.detect.SOFT_AFTER). Samples are drawn with seed 7 (never in the
benchmark, seed 0, or in training, 1000+).
"""

from __future__ import annotations

import pytest

from models.synth.corpus import corpus_sample
from worker.engine import Engine
from worker.settings import Settings


@pytest.fixture(scope="module")
def neural() -> Engine:
    return Engine(Settings(backend="onnx"))


@pytest.mark.parametrize("index", [35, 45])
def test_a_defocused_code_is_read_from_its_deblurred_crop(neural: Engine, index: int) -> None:
    sample = corpus_sample("blurred", index, seed=7)
    result = neural.scan(sample.data)
    assert [code.data for code in result.codes] == [sample.codes[0].payload]
    (code,) = result.codes
    assert (code.decoder, code.variant) == ("qrw-soft", "rectified_defocus+soft")
    assert result.complete
