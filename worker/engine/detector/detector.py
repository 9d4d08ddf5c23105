"""One detector model, ready to use: page in, detections (box, corners, score) out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worker.engine.detector import geometry
from worker.engine.detector.configs import CONFIGS
from worker.engine.detector.sessions import Session, default_model_dir, open_session
from worker.settings import Settings


def model_dir(settings: Settings) -> Path:
    return Path(settings.model_dir) if settings.model_dir else default_model_dir()


class Detector:
    def __init__(self, size: str, session: Session, threshold: float) -> None:
        self.size = size
        self.session = session
        self.threshold = threshold
        self.input_size = CONFIGS[size].input_size

    @classmethod
    def load(cls, size: str, settings: Settings) -> Detector:
        session = open_session(size, settings.backend, model_dir(settings), settings.model_threads)
        return cls(size, session, settings.detector_threshold)

    @property
    def label(self) -> str:
        """What a result names as the model that found a code, e.g. "qr-det-small/onnx"."""
        return f"qr-det-{self.size}/{self.session.backend}"

    def release(self) -> None:
        """Give the memory the model keeps between images back to the OS (call when idle)."""
        self.session.release()

    def detect(self, gray: np.ndarray) -> list[geometry.Detection]:
        """Detections in `gray`'s own pixel coordinates, most confident first."""
        boxed = geometry.letterbox(gray, self.input_size)
        heat, box, corners = self.session.run(boxed.tensor)
        return geometry.decode(heat, box, corners, boxed.scale, threshold=self.threshold)
