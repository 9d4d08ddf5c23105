"""The detector's sizes, without importing torch: the ONNX runtime needs them, and so do
training, export and evaluation (models/detector), which import them from here."""

from __future__ import annotations

from dataclasses import dataclass

STRIDE = 4  # input pixels per output cell side; geometry decodes the maps with it


@dataclass(frozen=True, slots=True)
class NetConfig:
    name: str
    input_size: int
    widths: tuple[int, int, int, int, int]  # stem (stride 2), then strides 4, 8, 16, 32
    depths: tuple[int, int, int, int]  # blocks at strides 4, 8, 16, 32
    neck: int


CONFIGS = {
    "small": NetConfig("small", 384, (16, 32, 64, 96, 160), (1, 2, 3, 2), 64),
    "medium": NetConfig("medium", 640, (24, 48, 80, 160, 256), (2, 3, 4, 2), 96),
}
