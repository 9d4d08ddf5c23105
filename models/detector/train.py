"""Training: CenterNet targets, losses, and a wall-clock-bounded AdamW loop.

The heat map learns a Gaussian bump per code centre with the penalty-reduced focal loss;
the box and corner channels are regressed in the raw units `net.decode_raw` expects
(log distances in strides, corners relative to the half box) at the centre cell and its
3x3 neighbours, so a peak one cell off still decodes to the right box.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from models.detector import data
from models.detector.evaluate import evaluate_items, torch_runner
from worker.engine.detector.net import STRIDE, QRDetector, build

CHECKPOINTS = data.ROOT / "build" / "detector-train"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    model: str
    seed: int = 0
    minutes: float = 30.0
    steps: int | None = None  # fixes the schedule's length; otherwise wall clock sets it
    init: str | None = None  # weights to continue from (a second cosine cycle)
    tag: str = ""  # checkpoint folder suffix
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    ema_decay: float = 0.998
    synth_share: float = 0.4  # of each batch drawn from synthetic pages
    eval_at: tuple[float, ...] = (0.4, 0.6, 0.75, 0.9)  # schedule progress of dev evaluations
    box_weight: float = 1.0
    corner_weight: float = 0.5
    workers: int = 1


# Crop side, images per batch and how often: similar pixels per batch; the larger crops
# carry codes up to the largest the model meets at its input size.
CROP_PLANS: dict[str, tuple[tuple[int, int, float], ...]] = {
    "small": ((256, 14, 0.5), (320, 9, 0.3), (384, 6, 0.2)),
    "medium": ((320, 8, 0.5), (448, 4, 0.3), (576, 2, 0.2)),
}


# --- targets ----------------------------------------------------------------------------


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: a centre this far off still gives a box with `min_overlap` IoU."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def make_targets(crop: data.Crop) -> dict[str, np.ndarray]:
    """Dense maps at stride 4: heat, regression weights and raw regression targets."""
    cells = crop.image.shape[0] // STRIDE
    heat = np.zeros((cells, cells), np.float32)
    heat_weight = np.ones((cells, cells), np.float32)
    reg_weight = np.zeros((cells, cells), np.float32)
    corner_weight = np.zeros((cells, cells), np.float32)
    ltrb = np.zeros((4, cells, cells), np.float32)
    corners = np.zeros((8, cells, cells), np.float32)
    for x0, y0, x1, y1 in crop.ignore / STRIDE:
        # Cut-off or tiny codes: neither a centre nor background.
        heat_weight[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = 0.0
    centre_xy = (crop.boxes[:, :2] + crop.boxes[:, 2:]) / 2
    areas = np.prod(crop.boxes[:, 2:] - crop.boxes[:, :2], axis=1)
    # Large codes first, so a small code's cells win where two codes share them.
    for k in np.argsort(-areas):
        box, quad = crop.boxes[k], crop.quads[k]
        cx, cy = centre_xy[k] / STRIDE
        ci, cj = min(int(cy), cells - 1), min(int(cx), cells - 1)
        w, h = (box[2:] - box[:2]) / STRIDE
        radius = max(0, int(gaussian_radius(h, w)))
        sigma = (2 * radius + 1) / 6
        _draw_gaussian(heat, ci, cj, radius, sigma)
        heat_weight[ci, cj] = 1.0
        half = np.maximum((box[2:] - box[:2]) / 2, 1e-3)
        mid = (box[:2] + box[2:]) / 2
        normalised = ((quad - mid) / half).reshape(8) if np.isfinite(quad).all() else None
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                i, j = ci + di, cj + dj
                if not (0 <= i < cells and 0 <= j < cells):
                    continue
                px, py = (j + 0.5) * STRIDE, (i + 0.5) * STRIDE
                dist = np.array([px - box[0], py - box[1], box[2] - px, box[3] - py])
                if dist.min() < 1.0:
                    continue
                weight = 1.0 if di == dj == 0 else math.exp(-(di * di + dj * dj) / (2 * sigma**2))
                if weight < 0.05:
                    continue
                reg_weight[i, j] = weight
                ltrb[:, i, j] = np.log(dist / STRIDE)
                if normalised is not None:
                    corner_weight[i, j] = weight
                    corners[:, i, j] = normalised
                else:
                    corner_weight[i, j] = 0.0
    return {
        "heat": heat[None],
        "heat_weight": heat_weight[None],
        "reg_weight": reg_weight[None],
        "corner_weight": corner_weight[None],
        "ltrb": ltrb,
        "corners": corners,
    }


def _draw_gaussian(heat: np.ndarray, ci: int, cj: int, radius: int, sigma: float) -> None:
    ys, xs = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    bump = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma)).astype(np.float32)
    cells = heat.shape[0]
    top, bottom = min(ci, radius), min(cells - ci, radius + 1)
    left, right = min(cj, radius), min(cells - cj, radius + 1)
    region = heat[ci - top : ci + bottom, cj - left : cj + right]
    np.maximum(region, bump[radius - top : radius + bottom, radius - left : radius + right], region)
    heat[ci, cj] = 1.0


# --- data pipeline ----------------------------------------------------------------------


class CropDataset(Dataset):
    """Keys are (item index, crop side, sample seed): every crop is a pure function of
    its key, so batches are reproducible however many workers produce them."""

    def __init__(self, items: list[data.Item], input_size: int, seed: int) -> None:
        self.items = items
        self.input_size = input_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        index, size, sample_seed = key
        item = self.items[index]
        rng = np.random.default_rng([self.seed, sample_seed])
        crop = data.augment(item, item.load(), rng, size, self.input_size)
        targets = make_targets(crop)
        out = {name: torch.from_numpy(value) for name, value in targets.items()}
        out["image"] = torch.from_numpy(crop.image[None])
        return out


class BatchPlan(Sampler):
    """An endless stream of batches: one crop size per batch, real and synthetic mixed."""

    def __init__(self, items: list[data.Item], plan: tuple, synth_share: float, seed: int) -> None:
        self.real = np.array([i for i, it in enumerate(items) if it.source == "real"])
        self.synth = np.array([i for i, it in enumerate(items) if it.source == "synth"])
        self.plan = plan
        self.synth_share = synth_share
        self.seed = seed

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        rng = np.random.default_rng([self.seed, 1])
        probabilities = np.array([p for _, _, p in self.plan])
        counter = 0
        while True:
            size, batch, _ = self.plan[rng.choice(len(self.plan), p=probabilities)]
            keys = []
            for _ in range(batch):
                pool = self.synth if rng.random() < self.synth_share else self.real
                keys.append((int(rng.choice(pool)), int(size), counter))
                counter += 1
            yield keys


def _worker_init(_: int) -> None:
    # The two cores belong to the training step; augmentation must not fan out.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# --- losses -----------------------------------------------------------------------------


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, from logits for numerical safety."""
    positive = target.eq(1.0).float()
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos = positive * (1 - p).pow(2) * log_p
    neg = (1 - positive) * weight * (1 - target).pow(4) * p.pow(2) * log_not_p
    return -(pos.sum() + neg.sum()) / positive.sum().clamp(min=1.0)


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (weight * (pred - target).abs()).sum() / weight.sum().clamp(min=1.0)


def losses(raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "heat": focal_loss(raw[:, :1], batch["heat"], batch["heat_weight"]),
        "box": weighted_l1(raw[:, 1:5], batch["ltrb"], batch["reg_weight"]),
        "corners": weighted_l1(raw[:, 5:13], batch["corners"], batch["corner_weight"]),
    }


# --- the loop ---------------------------------------------------------------------------


class Ema:
    """Exponential moving average of the weights (and BN statistics) for evaluation."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Short warm-up: early averages would otherwise be dominated by the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_v, v in zip(
            self.model.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema_v.copy_(v)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        # Norm scales and biases are not weights to shrink.
        (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train(config: TrainConfig, out_dir: Path | None = None) -> Path:
    """Trains, keeps the best EMA weights by dev recall; returns the best checkpoint path."""
    out_dir = out_dir or CHECKPOINTS / (
        f"{config.model}-{config.tag}" if config.tag else config.model
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    torch.set_num_threads(2)
    cv2.setNumThreads(1)
    data.build_cache()
    items = data.load_items(["train"])
    dev = data.load_items(["dev"])
    # The shipped weights were trained on CPU; a GPU, where present, only makes it faster.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build(config.model)
    if config.init is not None:
        model.load_state_dict(torch.load(config.init, map_location="cpu", weights_only=True))
    model = model.to(device)
    input_size = model.config.input_size
    ema = Ema(model, config.ema_decay)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    loader = DataLoader(
        CropDataset(items, input_size, config.seed),
        batch_sampler=BatchPlan(items, CROP_PLANS[config.model], config.synth_share, config.seed),
        num_workers=config.workers,
        worker_init_fn=_worker_init,
        persistent_workers=config.workers > 0,
        prefetch_factor=4 if config.workers > 0 else None,
    )
    budget = config.minutes * 60.0
    log = (out_dir / "train.log.jsonl").open("w")
    print(f"{config.model}: {len(items)} training pages, {len(dev)} dev pages", flush=True)
    start = time.monotonic()
    best_key: tuple | None = None
    best_path = out_dir / "best.pt"
    pending = list(config.eval_at)
    running: dict[str, float] = {}
    step = 0
    model.train()
    for batch in loader:
        progress = _progress(config, step, time.monotonic() - start, budget)
        if progress >= 1.0:
            break
        lr = config.lr * min(1.0, (step + 1) / config.warmup_steps)
        lr *= 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
        raw = model.forward_raw(batch["image"])
        parts = losses(raw, batch)
        loss = parts["heat"] + config.box_weight * parts["box"]
        loss = loss + config.corner_weight * parts["corners"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        ema.update(model, step)
        step += 1
        for name, tensor in {"loss": loss, **parts}.items():
            value = float(tensor.detach())
            running[name] = 0.95 * running.get(name, value) + 0.05 * value
        if step % 25 == 0:
            elapsed = time.monotonic() - start
            record = {"step": step, "elapsed_s": round(elapsed, 1), "lr": lr, **running}
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(json.dumps({k: round(v, 4) for k, v in record.items()}), flush=True)
        if pending and progress >= pending[0]:
            pending.pop(0)
            best_key = _checkpoint(ema.model, dev, step, best_key, best_path, log, start)
    best_key = _checkpoint(ema.model, dev, step, best_key, best_path, log, start)
    torch.save(_cpu_state(ema.model), out_dir / "last.pt")
    summary = {
        "config": asdict(config),
        "steps": step,
        "wall_s": round(time.monotonic() - start, 1),
        "best": best_key,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.close()
    return best_path


def _progress(config: TrainConfig, step: int, elapsed: float, budget: float) -> float:
    if config.steps is not None:
        return step / config.steps
    return elapsed / budget


def _checkpoint(
    model: QRDetector,
    dev: list[data.Item],
    step: int,
    best_key: tuple | None,
    path: Path,
    log: TextIO,
    start: float,
) -> tuple:
    """Evaluate on the dev split; keep the weights if they are the best so far."""
    on_cpu = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
    metrics = evaluate_items(torch_runner(on_cpu), dev, model.config.input_size)
    # Recall decides; precision only breaks ties, and on a full tie the later weights win.
    key = (metrics["recall"], metrics["precision"], step)
    record = {"step": step, "elapsed_s": round(time.monotonic() - start, 1), "dev": metrics}
    print(json.dumps(record), flush=True)
    log.write(json.dumps(record) + "\n")
    if best_key is None or key[:2] >= best_key[:2]:
        torch.save(_cpu_state(model), path)
        return key
    return best_key


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
