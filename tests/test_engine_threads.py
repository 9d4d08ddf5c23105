"""How many threads the engine's image work runs on.

OpenCV runs its image operations (resizing, warps, blurs) on a pool of one thread per core
by default. A worker process is one of several on its machine (one per core), and a pool's
threads that wait for work spin against the worker processes beside them: over the
benchmark's `none` photos the scans took 6% more CPU with the pool than on one thread, and
a third more on the clock at a load of 7. The engine keeps OpenCV to QRW_IMAGE_THREADS.
"""

from __future__ import annotations

import cv2
import pytest

from worker.engine import Engine
from worker.settings import Settings, SettingsError


@pytest.mark.parametrize("threads", [1, 2])
def test_an_engine_runs_opencv_on_the_threads_its_settings_give(threads: int) -> None:
    before = cv2.getNumThreads()
    try:
        Engine(Settings().replace(image_threads=threads), stages=[])
        assert cv2.getNumThreads() == threads
    finally:
        cv2.setNumThreads(before)


def test_one_image_thread_is_the_default_as_one_model_thread_is() -> None:
    assert Settings().image_threads == 1 == Settings().model_threads


def test_image_threads_below_one_are_refused() -> None:
    with pytest.raises(SettingsError, match="QRW_IMAGE_THREADS"):
        Settings().replace(image_threads=0)
