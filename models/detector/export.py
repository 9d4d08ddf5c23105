"""Export a trained detector: the state dict, the ONNX graph, and a parity check between them.

The ONNX graph is `QRDetector.forward` (network plus `decode_raw`), so both runtimes
return the same three maps and share the numpy decoding in `geometry.decode`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import torch

from models.detector import data
from models.detector.evaluate import onnx_runner, torch_runner
from worker.engine.detector.geometry import letterbox
from worker.engine.detector.net import QRDetector, build

MODELS_DIR = data.ROOT / "models"
OPSET = 17
HEAT_TOLERANCE = 1e-4
PIXEL_TOLERANCE = 1e-2
_PARITY_IMAGES = 6
CANDIDATE_HEAT = 0.1  # below any threshold a runtime would decode at


def artefact_paths(name: str) -> dict[str, Path]:
    return {
        "pt": MODELS_DIR / f"qr-det-{name}.pt",
        "onnx": MODELS_DIR / f"qr-det-{name}.onnx",
        "metrics": MODELS_DIR / f"qr-det-{name}.metrics.json",
    }


def load_model(name: str, state_path: Path) -> QRDetector:
    model = build(name)
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    return model.eval()


def export(name: str, checkpoint: Path) -> dict[str, object]:
    """Writes `models/qr-det-{name}.pt` and `.onnx`; returns the parity measurements."""
    paths = artefact_paths(name)
    model = load_model(name, checkpoint)
    torch.save(model.state_dict(), paths["pt"])
    size = model.config.input_size
    example = torch.full((1, 1, size, size), 0.5)
    maps_axes = {0: "n", 2: "h4", 3: "w4"}
    torch.onnx.export(
        model,
        (example,),
        str(paths["onnx"]),
        input_names=["image"],
        output_names=["heat", "box", "corners"],
        dynamic_axes={
            "image": {0: "n", 2: "h", 3: "w"},
            **dict.fromkeys(("heat", "box", "corners"), maps_axes),
        },
        dynamo=False,
        opset_version=OPSET,
    )
    _fix_channel_dims(paths["onnx"])
    return parity(model, paths["onnx"])


def _fix_channel_dims(path: Path) -> None:
    """Pin the outputs' channel counts, which the exporter leaves symbolic after a reshape,
    so the graph states the contract (1, 4 and 8 channels) to whoever loads it."""
    graph_model = onnx.load(str(path))
    channels = {"heat": 1, "box": 4, "corners": 8}
    for output in graph_model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_value = channels[output.name]
    onnx.checker.check_model(graph_model, full_check=True)
    onnx.save(graph_model, str(path))


def parity(model: QRDetector, onnx_path: Path) -> dict[str, object]:
    """Max absolute differences, PyTorch vs ONNX Runtime, on real validation photos at the
    model's input size, plus one batch of two at another size to prove the dynamic axes.

    Box and corner differences are reported over the whole map and over the cells that can
    become detections (heat >= 0.1): in background cells the network may predict boxes of
    hundreds of pixels, where float32 rounding alone is a few thousandths of a pixel and
    means nothing, since `decode` never reads those cells.
    """
    size = model.config.input_size
    torch_run, onnx_run = torch_runner(model), onnx_runner(onnx_path)
    worst = _Worst()
    images = [gray for gray, _, _ in _parity_pages()]
    for gray in images:
        tensor = letterbox(gray, size).tensor
        worst.add(torch_run(tensor), onnx_run(tensor))
    other = size // 2 + 32
    batch = np.concatenate([letterbox(gray, other).tensor for gray in images[:2]])
    dynamic = _Worst()
    dynamic.add(torch_run(batch), onnx_run(batch))
    return {
        "images": len(images),
        "input_size": size,
        "max_abs_diff": worst.all,
        "max_abs_diff_candidate_cells": worst.candidates,
        "candidate_cells": worst.candidate_count,
        "dynamic_shape_check": {
            "input": [2, 1, other, other],
            "max_abs_diff": dynamic.all,
            "max_abs_diff_candidate_cells": dynamic.candidates,
        },
        "tolerance": {
            "heat": HEAT_TOLERANCE,
            "box_px": PIXEL_TOLERANCE,
            "corners_px": PIXEL_TOLERANCE,
        },
        "passed_whole_map": worst.passed(worst.all) and dynamic.passed(dynamic.all),
        "passed_candidate_cells": worst.passed(worst.candidates)
        and dynamic.passed(dynamic.candidates),
    }


class _Worst:
    """Running maxima of |PyTorch - ONNX Runtime| per output."""

    def __init__(self) -> None:
        self.all = {"heat": 0.0, "box_px": 0.0, "corners_px": 0.0}
        self.candidates = {"heat": 0.0, "box_px": 0.0, "corners_px": 0.0}
        self.candidate_count = 0

    def add(self, ours: tuple, theirs: tuple) -> None:
        mask = np.maximum(ours[0], theirs[0])[:, 0] >= CANDIDATE_HEAT  # [N, H, W]
        self.candidate_count += int(mask.sum())
        for key, a, b in zip(("heat", "box_px", "corners_px"), ours, theirs, strict=True):
            diff = np.abs(a - b).max(axis=1)  # worst channel per cell
            self.all[key] = max(self.all[key], _round(diff.max()))
            if mask.any():
                self.candidates[key] = max(self.candidates[key], _round(diff[mask].max()))

    @staticmethod
    def passed(diffs: dict[str, float]) -> bool:
        return (
            diffs["heat"] < HEAT_TOLERANCE
            and diffs["box_px"] < PIXEL_TOLERANCE
            and diffs["corners_px"] < PIXEL_TOLERANCE
        )


def _round(value: float) -> float:
    return float(f"{float(value):.3g}")


def _parity_pages() -> list[tuple[np.ndarray, None, None]]:
    pairs = data.labelled_images(data.VAL_DIR)[:_PARITY_IMAGES]
    pages = []
    for image_path, _ in pairs:
        gray = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise OSError(f"cannot read {image_path}")
        pages.append((gray, None, None))
    return pages
