"""What a worker keeps in memory between jobs, and what it gives back (issue 11).

The ONNX sessions of a process share one arena, and `release` returns its free regions to
the OS; the supervisor imports the workers' libraries before it forks them. None of it
may change what a detector finds. Memory is read in fresh subprocesses, never in the
pytest process (its own engines would blur the figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from models.synth import photo_invoice
from worker.engine.detector import sessions
from worker.engine.detector.sessions import OnnxSession, default_model_dir, weights_path
from worker.queue.rq_worker import IdleTrim
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="memory is read from /proc"
)


def page(seed: int = 11) -> np.ndarray:
    """A photographed invoice, letterboxed as the medium detector sees it."""
    import cv2

    from worker.engine.detector.geometry import letterbox

    gray = cv2.imdecode(np.frombuffer(photo_invoice(seed).data, np.uint8), cv2.IMREAD_GRAYSCALE)
    return letterbox(gray, 640).tensor


def test_sessions_sharing_one_arena_find_exactly_what_an_arena_of_their_own_finds() -> None:
    path = weights_path(default_model_dir(), "medium", "onnx")
    shared, own = OnnxSession(path, 1), OnnxSession(path, 1, shared_arena=False)
    tensor = page()
    expected = own.run(tensor)
    for got, want in zip(shared.run(tensor), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # Released, the arena is refilled on the next run, with the same maps.
    shared.release()
    for got, want in zip(shared.run(tensor), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_open_session_gives_onnx_sessions_the_shared_arena_unless_asked_otherwise() -> None:
    opened = sessions.open_session("small", "onnx", default_model_dir(), 1)
    assert isinstance(opened, OnnxSession)
    assert opened.shared_arena is True


RELEASE_PROBE = r"""
import ctypes, json
import numpy as np
from worker.engine.detector.sessions import OnnxSession, default_model_dir, weights_path

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

out = {}
models = default_model_dir()
sessions = [OnnxSession(weights_path(models, s, "onnx"), 1) for s in ("small", "medium")]
for session, side in zip(sessions, (384, 640)):
    session.run(np.random.default_rng(0).random((1, 1, side, side), np.float32))
out["after_runs"] = rss()
for session in sessions:
    session.release()
ctypes.CDLL("libc.so.6").malloc_trim(0)
out["released"] = rss()
print(json.dumps(out))
"""


def test_release_gives_the_arena_back_to_the_os() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RELEASE_PROBE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    # The medium model's activations alone are about 50 MB; most of it must go.
    assert figures["after_runs"] - figures["released"] > 25, figures


PRELOAD_PROBE = r"""
import gc, json, sys
from worker.queue.supervisor import preload
from worker.settings import Settings
loaded = preload(Settings.from_env({"QRW_BACKEND": sys.argv[1]}))
print(json.dumps({
    "loaded": loaded,
    "frozen": gc.get_freeze_count(),
    "modules": sorted(m for m in ("onnxruntime", "torch", "pypdfium2", "PIL.PngImagePlugin")
                      if m in sys.modules),
}))
"""


@pytest.mark.parametrize(
    ("backend", "runtime"), [("onnx", "onnxruntime"), ("none", None)], ids=["onnx", "none"]
)
def test_the_supervisor_imports_what_its_workers_would_before_it_forks_them(
    backend: str, runtime: str | None
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PRELOAD_PROBE, backend],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "pypdfium2" in found["modules"] and "PIL.PngImagePlugin" in found["modules"]
    assert ("onnxruntime" in found["modules"]) is (runtime == "onnxruntime")
    assert "torch" not in found["modules"]  # only a torch pool pays for importing it
    assert found["frozen"] > 0  # the imported objects are kept out of the forks' GC passes


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_an_idle_worker_releases_its_memory_once_and_a_busy_one_never() -> None:
    released = threading.Event()
    calls: list[float] = []

    def release() -> None:
        calls.append(time.monotonic())
        released.set()

    trim = IdleTrim(0.05, release)
    trim.start()
    time.sleep(0.3)
    assert calls == []  # nothing ran yet: nothing to give back

    trim.busy()
    time.sleep(0.3)
    assert calls == []  # a job is running: its memory is in use

    trim.idle()
    assert wait_for(released.is_set)
    time.sleep(0.3)
    assert len(calls) == 1  # once per idle period, not every tick


def test_a_page_scanned_after_a_release_reads_the_same_codes(settings: Settings) -> None:
    from worker.engine import Engine
    from worker.queue.rq_worker import release_memory

    engine = Engine(settings)
    sample = photo_invoice(5)
    before = engine.scan(sample.data)
    release_memory(engine)
    after = engine.scan(sample.data)
    assert {c.data for c in before.codes} == {c.payload for c in sample.codes}
    assert [c.data for c in after.codes] == [c.data for c in before.codes]
