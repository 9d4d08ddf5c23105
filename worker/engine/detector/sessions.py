"""The two runtimes of one model: ONNX Runtime and PyTorch, behind one small interface.

A session is created once per process and reused for every image. PyTorch is imported
only when it is the chosen backend, so an ONNX worker never pays for it (in start-up
time or memory).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

Maps = tuple[np.ndarray, np.ndarray, np.ndarray]  # heat, box, corners


class ModelUnavailable(RuntimeError):
    """The configured detector cannot be loaded: a deployment error, raised at start-up."""


class Session(Protocol):
    backend: str
    path: Path

    def run(self, image: np.ndarray) -> Maps:
        """[1, 1, S, S] float32 in, the network's (heat, box, corners) maps out."""
        ...


def default_model_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "models"


def weights_path(model_dir: Path, size: str, backend: str) -> Path:
    return model_dir / f"qr-det-{size}.{'pt' if backend == 'torch' else 'onnx'}"


class OnnxSession:
    backend = "onnx"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn a core between images; workers are many, so yield instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def run(self, image: np.ndarray) -> Maps:
        heat, box, corners = self._session.run(None, {self._input: image})
        return heat, box, corners


class TorchSession:
    backend = "torch"

    def __init__(self, path: Path, size: str, threads: int) -> None:
        import torch

        from worker.engine.detector.net import build

        torch.set_num_threads(threads)
        self._torch = torch
        self.path = path
        self._model = build(size)
        self._model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self._model.eval()

    def run(self, image: np.ndarray) -> Maps:
        with self._torch.inference_mode():
            heat, box, corners = self._model(self._torch.from_numpy(image))
        return heat.numpy(), box.numpy(), corners.numpy()


def check_models(backend: str, sizes: tuple[str, ...], model_dir: Path) -> None:
    """Fail fast, before any process is started, when the configured models cannot load."""
    if backend == "none":
        return
    for size in sizes:
        path = weights_path(model_dir, size, backend)
        if not path.is_file():
            raise ModelUnavailable(
                f"detector weights {path} are missing (QRW_MODEL_DIR; `make train` rebuilds them)"
            )
    if backend == "torch" and importlib.util.find_spec("torch") is None:
        raise ModelUnavailable("QRW_BACKEND=torch needs PyTorch: pip install -e '.[torch]'")


def open_session(size: str, backend: str, model_dir: Path, threads: int) -> Session:
    check_models(backend, (size,), model_dir)
    path = weights_path(model_dir, size, backend)
    if backend == "torch":
        try:
            return TorchSession(path, size, threads)
        except ImportError as exc:
            raise ModelUnavailable(
                "QRW_BACKEND=torch needs PyTorch: pip install -e '.[torch]'"
            ) from exc
    return OnnxSession(path, threads)
