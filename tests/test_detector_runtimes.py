"""One model, two runtimes: ONNX Runtime and PyTorch load the shipped weights, agree with
each other, and are chosen by settings alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker.engine import Engine
from worker.engine.detector.detector import Detector
from worker.engine.detector.geometry import letterbox
from worker.engine.detector.sessions import ModelUnavailable, default_model_dir
from worker.settings import Settings

VALIDATION = Path(__file__).resolve().parents[2] / "shared/datasets/qr-photos-val/images"


def photos(count: int = 4) -> list[np.ndarray]:
    paths = sorted(VALIDATION.glob("*.jpg"))[:count]
    if not paths:
        pytest.skip(f"no validation photos at {VALIDATION}")
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]


@pytest.mark.parametrize("size", ["small", "medium"])
def test_the_weights_ship_in_the_repository_for_both_runtimes(size: str) -> None:
    for suffix in ("onnx", "pt"):
        path = default_model_dir() / f"qr-det-{size}.{suffix}"
        assert path.is_file(), path
    limit_mb = {"small": 3, "medium": 12}[size]
    assert (default_model_dir() / f"qr-det-{size}.onnx").stat().st_size < limit_mb * 1024**2


@pytest.mark.parametrize("size", ["small", "medium"])
def test_onnx_runtime_and_pytorch_give_the_same_maps(size: str) -> None:
    onnx = Detector.load(size, Settings(backend="onnx"))
    torch = Detector.load(size, Settings(backend="torch"))
    for page in photos():
        tensor = letterbox(page, onnx.input_size).tensor
        # The stated tolerance: heat within 1e-4; boxes and corners, tens of pixels in
        # size, within 0.05 px (float32 rounding in a different order), far below what
        # moves a crop that carries an 18% margin.
        for ours, theirs, tolerance in zip(
            onnx.session.run(tensor), torch.session.run(tensor), (1e-4, 0.05, 0.05), strict=True
        ):
            assert np.abs(ours - theirs).max() < tolerance


@pytest.mark.parametrize("size", ["small", "medium"])
def test_both_runtimes_find_the_same_codes(size: str) -> None:
    onnx = Detector.load(size, Settings(backend="onnx"))
    torch = Detector.load(size, Settings(backend="torch"))
    for page in photos():
        ours, theirs = onnx.detect(page), torch.detect(page)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert np.allclose(a.box, b.box, atol=0.05)


def test_the_backend_setting_decides_which_stages_run() -> None:
    names = [s.name for s in Engine(Settings(backend="onnx")).stages]
    assert names == ["fast", "detect_small", "detect_medium", "thorough", "zoom"]
    assert [s.name for s in Engine(Settings(backend="none")).stages] == ["fast", "thorough"]
    only_small = Engine(Settings(backend="onnx", detector_models=("small",)))
    assert [s.name for s in only_small.stages] == ["fast", "detect_small", "thorough", "zoom"]


def test_missing_weights_stop_the_engine_at_start_up_not_at_the_first_job(
    tmp_path: Path,
) -> None:
    with pytest.raises(ModelUnavailable, match=r"qr-det-small\.onnx"):
        Engine(Settings(backend="onnx", model_dir=str(tmp_path)))


def test_an_onnx_worker_never_imports_torch() -> None:
    probe = (
        "import json, sys\n"
        "from worker.engine import Engine\n"
        "from worker.settings import Settings\n"
        "Engine(Settings(backend='onnx')).warm_up()\n"
        "print(json.dumps({'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"torch": False}
