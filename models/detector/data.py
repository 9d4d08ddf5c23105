"""Training and evaluation data for the detector: a decoded cache and the augmentation.

Sources, all cached once under `build/detector-data/` by `build_cache`:
- `real`: photos from `shared/datasets/qr-photos` (CC BY 4.0), boxes only; a fixed
  1/16 of them (by a hash of the name) is the `dev` split used to pick checkpoints, so
  the reported validation set (`qr-photos-val`) is never looked at during training;
- `synth`: pages from `models.synth.corpus` with exact corner quads, training seed 1000,
  including `none` pages (decoys, no QR code) as negatives;
- `synth-test`: the held-out synthetic evaluation set, seed 2000, kept at full resolution.

All coordinates are pixel-edge coordinates ((0, 0) is the outer corner of the top-left
pixel), the convention of `models.synth` and of `geometry.letterbox`, so a resize by `s`
scales every point by exactly `s`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from worker.engine.detector.geometry import PAD_VALUE, canonical_corners

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "detector-data"
SHARED = ROOT.parent / "shared" / "datasets"
REAL_DIR = SHARED / "qr-photos"
VAL_DIR = SHARED / "qr-photos-val"

CACHE_LONG_SIDE = 1024
TRAIN_SEED = 1000  # the benchmark corpus is seed 0: never train on it
TEST_SEED = 2000
SYNTH_PER_CATEGORY = 90
SYNTH_NEGATIVES = 160
TEST_PER_CATEGORY = 10
TEST_NEGATIVES = 20
DEV_MODULUS = 16
_CACHE_VERSION = 1
_PAD_BYTE = round(PAD_VALUE * 255)


@dataclass(frozen=True, slots=True)
class Item:
    """One cached page: its file and its codes in the cached image's pixels."""

    name: str
    source: str  # "real" or "synth"
    split: str  # "train", "dev" or "test"
    path: Path
    boxes: np.ndarray  # float32 [K, 4] x0, y0, x1, y1
    quads: np.ndarray | None  # float32 [K, 4, 2] canonical order, None for boxes-only data
    original_long_side: int  # long side of the page before caching (for letterbox scales)

    def load(self) -> np.ndarray:
        if self.path.suffix == ".npy":
            return np.load(self.path)
        image = cv2.imread(str(self.path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise OSError(f"cannot read {self.path}")
        return image


# --- reading the sources --------------------------------------------------------------------


def read_yolo_boxes(label: Path, width: int, height: int) -> np.ndarray:
    """Boxes in pixels from a YOLO label file; polygon lines count by their bounding box."""
    boxes = []
    for line in label.read_text().splitlines():
        values = [float(v) for v in line.split()[1:]]
        if len(values) == 4:
            cx, cy, w, h = values
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            continue
        boxes.append((x0 * width, y0 * height, x1 * width, y1 * height))
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def labelled_images(folder: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for image in sorted((folder / "images").iterdir()):
        label = folder / "labels" / f"{image.stem}.txt"
        if label.exists():
            pairs.append((image, label))
    return pairs


def decode_sample(data: bytes, fmt: str, width: int, max_side: int | None) -> np.ndarray:
    """Grayscale pixels of a synthetic sample's first page, reduced to `max_side` if given.

    PDFs are rasterised at the size the sample's quads refer to (its `width`), as the
    worker does, so the quads scale by the same factor as the pixels.
    """
    if fmt == "pdf":
        import pypdfium2 as pdfium  # only synthetic PDFs need it

        page = pdfium.PdfDocument(data)[0]
        points_w, points_h = page.get_size()
        scale = width / points_w
        if max_side is not None:
            scale *= min(1.0, max_side / (max(points_w, points_h) * scale))
        array = page.render(scale=scale, grayscale=True).to_numpy()
        return np.ascontiguousarray(array if array.ndim == 2 else array[:, :, 0])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot decode a {fmt} sample")
    return shrink(image, max_side) if max_side is not None else image


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --- the cache ------------------------------------------------------------------------------


def _cache_real(args: tuple[str, str, str]) -> dict[str, object]:
    image_path, label_path, out = map(Path, args)
    image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"cannot read {image_path}")
    height, width = image.shape
    boxes = read_yolo_boxes(label_path, width, height)
    small = shrink(image, CACHE_LONG_SIDE)
    factor = small.shape[1] / width
    np.save(out, small)
    dev = zlib.crc32(image_path.stem.encode()) % DEV_MODULUS == 0
    return {
        "name": image_path.stem,
        "source": "real",
        "split": "dev" if dev else "train",
        "path": str(out.relative_to(CACHE)),
        "boxes": (boxes * factor).round(2).tolist(),
        "quads": None,
        "original_long_side": max(height, width),
    }


SynthJob = tuple[str, int, int, str, bool]  # category, index, seed, output file, full size


def _cache_synth(args: SynthJob) -> dict[str, object]:
    from models.synth.corpus import corpus_sample  # slow import, only for building

    category, index, seed, out_name, full_size = args
    out = Path(out_name)
    sample = corpus_sample(category, index, seed=seed)
    image = decode_sample(sample.data, sample.fmt, sample.width, None if full_size else 1024)
    factor = image.shape[1] / sample.width
    quads = np.asarray([code.quad for code in sample.codes], np.float32).reshape(-1, 4, 2)
    quads = np.stack([canonical_corners(q) for q in quads * factor]) if len(quads) else quads
    boxes = np.concatenate([quads.min(axis=1), quads.max(axis=1)], axis=1).reshape(-1, 4)
    if full_size:
        cv2.imwrite(str(out), image)
    else:
        np.save(out, image)
    return {
        "name": f"{sample.name}@{seed}",
        "source": "synth",
        "split": "test" if full_size else "train",
        "path": str(out.relative_to(CACHE)),
        "boxes": boxes.round(2).tolist(),
        "quads": quads.round(2).tolist(),
        "original_long_side": max(sample.width, sample.height),
    }


def _synth_jobs(
    seed: int, per_category: int, negatives: int, folder: Path, full: bool
) -> list[SynthJob]:
    from models.synth.corpus import CATEGORIES

    ext = "png" if full else "npy"
    jobs = []
    for category in CATEGORIES:
        count = negatives if category == "none" else per_category
        for index in range(count):
            out = folder / f"{category}-{index:04d}.{ext}"
            jobs.append((category, index, seed, str(out), full))
    return jobs


def build_cache(workers: int = 2, *, force: bool = False) -> Path:
    """Decode every source once; returns the index path. Idempotent unless `force`."""
    index_path = CACHE / "index.json"
    if (
        index_path.exists()
        and not force
        and json.loads(index_path.read_text()).get("version") == _CACHE_VERSION
    ):
        return index_path
    for sub in ("real", "synth", "synth-test"):
        (CACHE / sub).mkdir(parents=True, exist_ok=True)
    real_jobs = [
        (str(image), str(label), str(CACHE / "real" / f"{image.stem}.npy"))
        for image, label in labelled_images(REAL_DIR)
    ]
    train_jobs = _synth_jobs(
        TRAIN_SEED, SYNTH_PER_CATEGORY, SYNTH_NEGATIVES, CACHE / "synth", full=False
    )
    test_jobs = _synth_jobs(
        TEST_SEED, TEST_PER_CATEGORY, TEST_NEGATIVES, CACHE / "synth-test", True
    )
    with ProcessPoolExecutor(workers) as pool:
        entries = list(pool.map(_cache_real, real_jobs, chunksize=16))
        entries += list(pool.map(_cache_synth, train_jobs + test_jobs, chunksize=8))
    index_path.write_text(json.dumps({"version": _CACHE_VERSION, "items": entries}))
    return index_path


def load_items(splits: Iterable[str], sources: Iterable[str] | None = None) -> list[Item]:
    wanted, kinds = set(splits), None if sources is None else set(sources)
    raw = json.loads((CACHE / "index.json").read_text())["items"]
    items = []
    for entry in raw:
        if entry["split"] not in wanted or (kinds is not None and entry["source"] not in kinds):
            continue
        quads = entry["quads"]
        items.append(
            Item(
                name=entry["name"],
                source=entry["source"],
                split=entry["split"],
                path=CACHE / entry["path"],
                boxes=np.asarray(entry["boxes"], np.float32).reshape(-1, 4),
                quads=None if quads is None else np.asarray(quads, np.float32).reshape(-1, 4, 2),
                original_long_side=int(entry["original_long_side"]),
            )
        )
    return items


# --- augmentation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Crop:
    """One training input and its truth in the crop's pixels."""

    image: np.ndarray  # float32 [S, S], 0..1, padding at exactly PAD_VALUE
    boxes: np.ndarray  # float32 [K, 4] positives
    quads: np.ndarray  # float32 [K, 4, 2], NaN where the corners are unknown or cut off
    ignore: np.ndarray  # float32 [J, 4] codes too cut off or too small to learn either way


MIN_CODE_PX = 6.0  # below this nothing can be seen; such codes are ignored, not negatives
_VISIBLE_POSITIVE = 0.8  # share of a cut code that must stay in the crop to count


def augment(
    item: Item, image: np.ndarray, rng: np.random.Generator, size: int, input_size: int
) -> Crop:
    """A random `size` x `size` training crop of `image` (`item`'s cached pixels).

    Half the crops reproduce the runtime's letterbox scale (with jitter), so codes appear
    at the sizes the model meets; the other half zoom on one code to a log-uniform size
    between 12 px and most of the crop, which covers what the letterbox cannot (large
    codes on small pages, tiny codes on big ones).
    """
    height, width = image.shape
    boxes = item.boxes.astype(np.float64)
    quads = (
        item.quads.astype(np.float64)
        if item.quads is not None
        else np.full((len(boxes), 4, 2), np.nan)
    )
    scale, focus = _pick_scale(item, boxes, width, height, rng, size, input_size)
    origin = _pick_origin(boxes, focus, scale, width, height, rng, size)
    pixels = _resample(image, scale, origin, size)
    boxes = boxes * scale - np.tile(origin, 2)
    quads = quads * scale - origin
    valid = np.array(
        [-origin[0], -origin[1], width * scale - origin[0], height * scale - origin[1]]
    )
    pixels, boxes, quads, valid = _dihedral(pixels, boxes, quads, valid, rng)
    image_f = _photometric(pixels, rng)
    image_f = _pad_outside(image_f, valid)
    positives, kept_quads, ignore = _visible(boxes, quads, size)
    return Crop(image_f, positives, kept_quads, ignore)


def _pick_scale(
    item: Item,
    boxes: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator,
    size: int,
    input_size: int,
) -> tuple[float, int | None]:
    long_side = max(width, height)
    if len(boxes) and rng.random() < 0.5:
        focus = int(rng.integers(len(boxes)))
        side = float(np.max(boxes[focus, 2:] - boxes[focus, :2]))
        target = float(np.exp(rng.uniform(np.log(12.0), np.log(0.9 * size))))
        return float(np.clip(target / max(side, 1.0), 0.05, 4.0)), focus
    # The runtime's letterbox: the original page fits the input, never enlarged.
    page_scale = min(1.0, input_size / item.original_long_side)
    scale = page_scale * item.original_long_side / long_side * float(np.exp(rng.normal(0, 0.25)))
    focus = int(rng.integers(len(boxes))) if len(boxes) and rng.random() < 0.7 else None
    return float(np.clip(scale, 0.05, 4.0)), focus


def _pick_origin(
    boxes: np.ndarray,
    focus: int | None,
    scale: float,
    width: int,
    height: int,
    rng: np.random.Generator,
    size: int,
) -> np.ndarray:
    """Top-left corner of the crop in scaled page pixels."""
    if focus is None:
        span = np.array([width * scale, height * scale])
        low = np.minimum(0.0, span - size) - 0.1 * size
        high = np.maximum(0.0, span - size) + 0.1 * size
        return np.floor(rng.uniform(low, high))
    box = boxes[focus] * scale
    lo, hi = box[:2], box[2:]
    # Mostly the whole code in view, somewhere in the crop; sometimes cut by the edge.
    fits = (hi - lo) <= size
    inside_low, inside_high = hi - size, lo
    centre = (lo + hi) / 2 - size * rng.uniform(0.1, 0.9, 2)
    whole = rng.uniform(inside_low, np.maximum(inside_low, inside_high))
    origin = np.where(fits & (rng.random() < 0.9), whole, centre)
    return np.floor(origin)


def _resample(image: np.ndarray, scale: float, origin: np.ndarray, size: int) -> np.ndarray:
    """Pixels [origin, origin + size) of `image` resized by `scale`, padded outside."""
    if scale < 1.0:
        # Area averaging as in letterbox: a bilinear warp would alias fine modules.
        height, width = image.shape
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        matrix = np.array([[1.0, 0.0, -origin[0]], [0.0, 1.0, -origin[1]]])
        return cv2.warpAffine(
            image,
            matrix,
            (size, size),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=_PAD_BYTE,
        )
    # OpenCV warps in pixel-centre coordinates: edge x maps to s*x - o, so centre
    # x_c maps to s*x_c + (s - 1)/2 - o.
    shift = (scale - 1.0) / 2.0
    matrix = np.array([[scale, 0.0, shift - origin[0]], [0.0, scale, shift - origin[1]]])
    return cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=_PAD_BYTE,
    )


def _dihedral(
    pixels: np.ndarray,
    boxes: np.ndarray,
    quads: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random flip and quarter turn of the square crop, points moved alike."""
    size = pixels.shape[0]
    corners = np.stack([boxes[:, :2], boxes[:, 2:]], axis=1)  # [K, 2, 2]
    valid_pts = valid.reshape(1, 2, 2)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
        quads, corners, valid_pts = (_flip_x(p, size) for p in (quads, corners, valid_pts))
    for _ in range(int(rng.integers(4))):
        pixels = np.rot90(pixels)
        quads, corners, valid_pts = (_rot90(p, size) for p in (quads, corners, valid_pts))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1).reshape(-1, 4)
    valid = np.concatenate([valid_pts.min(axis=1), valid_pts.max(axis=1)], axis=1)[0]
    return np.ascontiguousarray(pixels), boxes, quads, valid


def _flip_x(points: np.ndarray, size: int) -> np.ndarray:
    out = points.copy()
    out[..., 0] = size - points[..., 0]
    return out


def _rot90(points: np.ndarray, size: int) -> np.ndarray:
    # np.rot90 turns counter-clockwise: new column = old row, new row = size - old column.
    return np.stack([points[..., 1], size - points[..., 0]], axis=-1)


def _photometric(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light, contrast, focus and compression of phone photos and scans."""
    if rng.random() < 0.25:
        pixels = cv2.GaussianBlur(pixels, (0, 0), float(rng.uniform(0.4, 1.6)))
    if rng.random() < 0.3:
        quality = int(rng.integers(25, 86))
        encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        pixels = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    image = pixels.astype(np.float32) * (1.0 / 255.0)
    if rng.random() < 0.8:
        contrast = float(np.exp(rng.uniform(-0.7, 0.3)))
        brightness = float(rng.uniform(-0.2, 0.2))
        image = (image - 0.5) * contrast + 0.5 + brightness
        image = np.clip(image, 0.0, 1.0) ** float(np.exp(rng.uniform(-0.5, 0.5)))
    if rng.random() < 0.3:
        sigma = float(rng.uniform(0.01, 0.05))
        image = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _pad_outside(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Outside the page the runtime sees exactly the letterbox's neutral grey."""
    size = image.shape[0]
    x0, y0 = (int(np.clip(np.ceil(v), 0, size)) for v in valid[:2])
    x1, y1 = (int(np.clip(np.floor(v), 0, size)) for v in valid[2:])
    out = np.full_like(image, PAD_VALUE)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return out


def _visible(
    boxes: np.ndarray, quads: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    clipped = np.clip(boxes, 0.0, float(size))
    area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6), axis=1)
    seen = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0.0), axis=1) / area
    long_side = np.max(clipped[:, 2:] - clipped[:, :2], axis=1)
    positive = (seen >= _VISIBLE_POSITIVE) & (long_side >= MIN_CODE_PX)
    ignore = (seen > 0) & ~positive
    kept = quads[positive].copy()
    whole = seen[positive] >= 0.999
    for k in range(len(kept)):
        kept[k] = canonical_corners(kept[k]) if whole[k] and np.isfinite(kept[k]).all() else np.nan
    return (
        clipped[positive].astype(np.float32),
        kept.astype(np.float32).reshape(-1, 4, 2),
        clipped[ignore].astype(np.float32),
    )
