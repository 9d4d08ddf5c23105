"""The two runtimes of one model: ONNX Runtime and PyTorch, behind one small interface.

A session is created once per process and reused for every image. PyTorch is imported
only when it is the chosen backend, so an ONNX worker never pays for it (in start-up
time or memory).

Memory (issue 11, measured with `python -m worker.bench.memory`): each ONNX session had
an arena of its own (about 64 MB for medium and 19 MB for small, per worker), kept for
good. The sessions of a process now share one arena, grown by what a run asks for rather
than to the next power of two, and `release` gives its free regions back to the OS: a
worker calls it when it goes idle (worker.queue.rq_worker), so an idle pool holds the
models but not their activations. Inference is as fast as before
(`python -m worker.bench.runtimes` compares the two settings).
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

    def release(self) -> None:
        """Return memory kept between runs to the OS (see OnnxSession.release)."""
        ...


def default_model_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "models"


def weights_path(model_dir: Path, size: str, backend: str) -> Path:
    return model_dir / f"qr-det-{size}.{'pt' if backend == 'torch' else 'onnx'}"


# Whether open_session gives each ONNX session an arena of its own (the former setting).
# Only `python -m worker.bench.runtimes` sets it, to compare the two in one command.
OWN_ARENAS = False
# ONNX Runtime's arena_extend_strategy: 0 doubles a region each time (kNextPowerOfTwo),
# 1 grows by what was requested (kSameAsRequested).
SAME_AS_REQUESTED = 1
_shared_arena = False


def register_shared_arena() -> None:
    """One CPU arena for every session of this process that asks for it (once per process:
    ONNX Runtime refuses a second registration). A worker runs the small and the medium
    model one after the other, so one arena the size of the larger serves both; it is
    thread-safe, and the shim's concurrent scans share it too."""
    global _shared_arena
    if _shared_arena:
        return
    import onnxruntime as ort

    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(
        info, ort.OrtArenaCfg({"arena_extend_strategy": SAME_AS_REQUESTED})
    )
    _shared_arena = True


class OnnxSession:
    backend = "onnx"

    def __init__(self, path: Path, threads: int, *, shared_arena: bool = True) -> None:
        """`shared_arena=False` is the former setting (an arena per session, kept for good),
        for the benchmark that compares the two."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn a core between images; workers are many, so yield instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if shared_arena:
            register_shared_arena()
            options.add_session_config_entry("session.use_env_allocators", "1")
        self.shared_arena = shared_arena
        self.path = path
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        # A run with this option ends by freeing the arena's regions that nothing uses.
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, image: np.ndarray) -> Maps:
        heat, box, corners = self._session.run(None, {self._input: image})
        return heat, box, corners

    def release(self) -> None:
        """Give the arena's free memory back to the OS, by the one means ONNX Runtime offers:
        a run (on a 32x32 input: about a millisecond) that shrinks the arena as it ends.
        The next image pays for faulting the pages in again (milliseconds), so call this
        when idle, not after every image. Safe while another thread runs the session."""
        self._session.run(None, {self._input: _TINY}, self._shrink)


_TINY = np.zeros((1, 1, 32, 32), np.float32)


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

    def release(self) -> None:
        """PyTorch's CPU tensors are freed to the C heap as they go: malloc_trim (done by
        the caller) is all there is to give back."""

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
    return OnnxSession(path, threads, shared_arena=not OWN_ARENAS)
