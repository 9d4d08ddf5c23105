"""Evaluation through exactly the runtime's path: `letterbox` -> model -> `decode`.

Box recall and precision at IoU 0.5 on the real validation photos (`qr-photos-val`, never
trained on) and on held-out synthetic pages (seed 2000, which also have exact corners),
plus ONNX Runtime latency and file size. `runner`s take the letterboxed tensor and
return the three maps as numpy, so PyTorch and ONNX Runtime are measured the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from models.detector import data
from worker.engine.detector.geometry import Detection, box_iou, canonical_corners, decode, letterbox

Maps = tuple[np.ndarray, np.ndarray, np.ndarray]
Runner = Callable[[np.ndarray], Maps]
# A page to evaluate: grayscale pixels, boxes [K, 4] and quads [K, 4, 2] (None if unknown).
Page = tuple[np.ndarray, np.ndarray, np.ndarray | None]

IOU = 0.5
THRESHOLD = 0.3  # geometry.decode's default, what the runtime uses
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5)


def torch_runner(model: torch.nn.Module) -> Runner:
    model.eval()

    def run(tensor: np.ndarray) -> Maps:
        with torch.no_grad():
            heat, box, corners = model(torch.from_numpy(tensor))
        return heat.numpy(), box.numpy(), corners.numpy()

    return run


def onnx_session(path: Path, threads: int = 1) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(path: Path, threads: int = 1) -> Runner:
    session = onnx_session(path, threads)

    def run(tensor: np.ndarray) -> Maps:
        heat, box, corners = session.run(None, {"image": tensor})  # type: ignore[attr-defined]
        return heat, box, corners

    return run


def detect(
    runner: Runner, gray: np.ndarray, size: int, thresholds: Iterable[float] = (THRESHOLD,)
) -> dict[float, list[Detection]]:
    """One network run, decoded at each threshold exactly as the runtime would."""
    boxed = letterbox(gray, size)
    heat, box, corners = runner(boxed.tensor)
    return {t: decode(heat, box, corners, boxed.scale, threshold=t) for t in thresholds}


def match(detections: list[Detection], truth: np.ndarray) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, best score first, at IoU >= 0.5: (detection, truth) pairs."""
    if not detections or len(truth) == 0:
        return []
    ious = box_iou(np.array([d.box for d in detections]), truth)
    taken: set[int] = set()
    pairs = []
    for i in range(len(detections)):  # decode returns them best first
        candidates = [(ious[i, j], j) for j in range(len(truth)) if j not in taken]
        if candidates:
            best_iou, j = max(candidates)
            if best_iou >= IOU:
                taken.add(j)
                pairs.append((i, j))
    return pairs


def evaluate_pages(runner: Runner, pages: Iterable[Page], size: int) -> dict[str, object]:
    """Recall and precision at the runtime threshold and a sweep; corner error in page px."""
    counts = {t: [0, 0, 0] for t in SWEEP}  # tp, detections, truths
    corner_px: list[float] = []
    corner_rel: list[float] = []
    pages_seen = 0
    for gray, boxes, quads in pages:
        pages_seen += 1
        detections = detect(runner, gray, size, SWEEP)
        for t in SWEEP:
            kept = detections[t]
            pairs = match(kept, boxes)
            counts[t][0] += len(pairs)
            counts[t][1] += len(kept)
            counts[t][2] += len(boxes)
            if t == THRESHOLD and quads is not None:
                for i, j in pairs:
                    truth = canonical_corners(quads[j])
                    error = np.linalg.norm(kept[i].quad - truth, axis=1).mean()
                    side = np.linalg.norm(truth - np.roll(truth, -1, axis=0), axis=1).mean()
                    corner_px.append(float(error))
                    corner_rel.append(float(error / side))
    tp, found, total = counts[THRESHOLD]
    metrics: dict[str, object] = {
        "pages": pages_seen,
        "codes": total,
        "threshold": THRESHOLD,
        "recall": _ratio(tp, total),
        "precision": _ratio(tp, found),
        "true_positives": tp,
        "false_positives": found - tp,
        "sweep": {
            str(t): {"recall": _ratio(c[0], c[2]), "precision": _ratio(c[0], c[1])}
            for t, c in counts.items()
        },
    }
    if corner_px:
        metrics["corner_error_px_mean"] = round(float(np.mean(corner_px)), 2)
        metrics["corner_error_px_median"] = round(float(np.median(corner_px)), 2)
        metrics["corner_error_rel_side_mean"] = round(float(np.mean(corner_rel)), 4)
    return metrics


def _ratio(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 1.0


def evaluate_items(runner: Runner, items: list[data.Item], size: int) -> dict[str, object]:
    pages = ((item.load(), item.boxes, item.quads) for item in items)
    return evaluate_pages(runner, pages, size)


def val_pages() -> Iterator[Page]:
    """The real validation photos (`qr-photos-val`): evaluation only, never training."""
    for image_path, label_path in data.labelled_images(data.VAL_DIR):
        gray = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise OSError(f"cannot read {image_path}")
        height, width = gray.shape
        yield gray, data.read_yolo_boxes(label_path, width, height), None


def synth_test_pages() -> Iterator[Page]:
    for item in data.load_items(["test"]):
        yield item.load(), item.boxes, item.quads


def latency_ms(path: Path, size: int, runs: int = 50) -> dict[str, float]:
    """ONNX Runtime on one intra-op thread, at the model's input size."""
    session = onnx_session(path, threads=1)
    tensor = np.full((1, 1, size, size), 0.5, np.float32)
    for _ in range(5):
        session.run(None, {"image": tensor})  # type: ignore[attr-defined]
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        session.run(None, {"image": tensor})  # type: ignore[attr-defined]
        times.append((time.perf_counter() - begin) * 1000)
    return {
        "median": round(float(np.median(times)), 2),
        "p90": round(float(np.percentile(times, 90)), 2),
        "min": round(float(np.min(times)), 2),
        "runs": runs,
    }


def evaluate_model(onnx_path: Path, size: int, runner: Runner | None = None) -> dict[str, object]:
    """Everything the model card reports, by default with ONNX Runtime (what ships)."""
    runner = runner or onnx_runner(onnx_path)
    return {
        "qr_photos_val": evaluate_pages(runner, val_pages(), size),
        "synthetic_test": evaluate_pages(runner, synth_test_pages(), size),
        "onnx_latency_ms": latency_ms(onnx_path, size),
        "onnx_bytes": onnx_path.stat().st_size,
    }
