"""One detector model, ready to use: page in, detections (box, corners, score) out."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from worker.engine.detector import geometry
from worker.engine.detector.configs import CONFIGS
from worker.engine.detector.sessions import Session, default_model_dir, open_session
from worker.settings import Settings

# The network's deepest stride: an input's sides are padded to a multiple of it.
_NET_STRIDE = 32


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

    def detect(self, gray: np.ndarray, threshold: float | None = None) -> list[geometry.Detection]:
        """Detections in `gray`'s own pixel coordinates, most confident first, down to
        `threshold` (the model's own when None)."""
        boxed = geometry.letterbox(gray, self.input_size)
        heat, box, corners = self.session.run(boxed.tensor)
        least = self.threshold if threshold is None else threshold
        return geometry.decode(heat, box, corners, boxed.scale, threshold=least)

    def detect_region(
        self, gray: np.ndarray, region: tuple[float, float, float, float]
    ) -> list[geometry.Detection]:
        """Detections over the threshold in `region` (x0, y0, x1, y1) of `gray`, seen at the
        scale `detect` sees the whole of `gray`, in `gray`'s pixels: a look at one place for a
        fraction of a whole page's inference (the network takes any size its stride divides)."""
        height, width = gray.shape[:2]
        scale = min(1.0, self.input_size / max(height, width))
        x0, y0 = max(0, int(region[0])), max(0, int(region[1]))
        x1, y1 = min(width, int(region[2]) + 1), min(height, int(region[3]) + 1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        crop = gray[y0:y1, x0:x1]
        if scale < 1.0:
            size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        found = self.detect_seen(crop, scale)
        offset = np.array([x0, y0], np.float32)
        return [
            geometry.Detection(
                d.score,
                (d.box[0] + x0, d.box[1] + y0, d.box[2] + x0, d.box[3] + y0),
                d.quad + offset,
            )
            for d in found
        ]

    def detect_seen(self, seen: np.ndarray, scale: float) -> list[geometry.Detection]:
        """Detections over the threshold in `seen`, an image `scale` times the size of what
        it shows, in the pixels of what it shows: one inference over the whole of it, its
        sides padded to the network's deepest stride (it takes any size that divides)."""
        rows, cols = seen.shape[:2]
        canvas = np.full(
            (-(-rows // _NET_STRIDE) * _NET_STRIDE, -(-cols // _NET_STRIDE) * _NET_STRIDE),
            geometry.PAD_VALUE,
            np.float32,
        )
        canvas[:rows, :cols] = seen.astype(np.float32) * (1.0 / 255.0)
        heat, box, corners = self.session.run(canvas[None, None])
        return geometry.decode(heat, box, corners, scale, threshold=self.threshold)
