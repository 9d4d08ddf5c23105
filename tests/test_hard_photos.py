"""Hard photos the detector finds but a plain crop cannot be read from: each late crop
variant reads a code nothing before it reads, and never invents one.

Samples are drawn with seed 7 (never in the benchmark, seed 0, or in training, 1000+).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.synth.corpus import corpus_sample
from worker.engine import Engine, enhance
from worker.engine.stages import detect
from worker.settings import Settings


@pytest.fixture(scope="module")
def neural() -> Engine:
    return Engine(Settings(backend="onnx"))


def _without(engine: Engine, names: set[str]) -> Engine:
    """The same engine with some crop variants taken out (restored by the caller)."""
    detect.VARIANTS = tuple(v for v in detect.VARIANTS if v.name not in names)
    return engine


@pytest.fixture
def without_variants():  # type: ignore[no-untyped-def]
    saved = detect.VARIANTS
    yield lambda engine, names: _without(engine, names)
    detect.VARIANTS = saved


def _shaken_code(length: float, angle: float) -> np.ndarray:
    """A crisp grid of modules smeared by camera shake, the way models.synth does it."""
    rng = np.random.default_rng(3)
    modules = rng.integers(0, 2, (33, 33)).astype(np.uint8) * 255
    image = cv2.resize(modules, (33 * 6, 33 * 6), interpolation=cv2.INTER_NEAREST)
    image = cv2.copyMakeBorder(image, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255)
    kernel = enhance.shake_kernel(enhance.Shake(angle, length))
    return cv2.filter2D(image, -1, kernel)


def test_the_shake_of_a_smeared_photo_is_measured() -> None:
    shake = enhance.estimate_shake(_shaken_code(length=12.0, angle=30.0))
    assert shake is not None
    assert abs(shake.angle - 30.0) < 6.0
    assert 10.0 <= shake.length <= 14.5


def test_an_unshaken_image_is_left_alone() -> None:
    sharp = _shaken_code(length=0.0, angle=0.0)
    defocused = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    assert enhance.estimate_shake(sharp) is None
    assert enhance.deblur_shake(defocused) is None


@pytest.mark.parametrize("index", [1, 2])
def test_a_shaken_photo_only_deconvolution_reads_is_read(
    neural: Engine, without_variants, index: int
) -> None:  # type: ignore[no-untyped-def]
    sample = corpus_sample("motion", index, seed=7)
    truth = {code.payload for code in sample.codes}
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == truth
    assert result.codes[0].variant == "rectified_deshake"
    before = without_variants(neural, {"rectified_deshake", "box_deshake"}).scan(sample.data)
    assert before.codes == []


def test_pages_without_a_code_get_no_invented_one_from_the_late_variants(neural: Engine) -> None:
    for category, index in [("none", i) for i in range(4)] + [("motion", 0)]:
        sample = corpus_sample(category, index, seed=11)
        truth = {code.payload for code in sample.codes}
        assert {code.data for code in neural.scan(sample.data).codes} <= truth
