"""Where benchmark images and their truth come from, all read the same way.

- A corpus folder written by `python -m models.synth.corpus`: `name.ext` + `name.json`
  (every payload and its corners).
- A folder of real photos with expected texts, zxing's test-image convention:
  `name.jpg` + `name.txt` (one code, its exact text).
- A YOLO-labelled folder (`images/`, `labels/`: `0 cx cy w h` normalised): boxes only,
  so it measures where codes are, not what they say.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pdf")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class Truth:
    payloads: tuple[bytes, ...] = ()  # exact bytes of every code, when known
    texts: tuple[str, ...] = ()  # expected texts, when only texts are known
    boxes: tuple[Box, ...] = ()  # code locations, when only boxes are known
    has_content: bool = True  # False for box-only truth


@dataclass(frozen=True)
class Item:
    name: str
    category: str
    path: Path
    truth: Truth = field(default_factory=Truth)


def corpus_folder(folder: Path) -> Iterator[Item]:
    for meta in sorted(folder.glob("*.json")):
        truth = json.loads(meta.read_text())
        image = next(
            (p for p in meta.parent.glob(meta.stem + ".*") if p.suffix in IMAGE_SUFFIXES), None
        )
        if image is None:
            continue
        payloads = tuple(base64.b64decode(c["payload_base64"]) for c in truth["codes"])
        yield Item(meta.stem, str(truth.get("category", folder.name)), image, Truth(payloads))


def text_folder(folder: Path, category: str | None = None) -> Iterator[Item]:
    for text in sorted(folder.rglob("*.txt")):
        image = next(
            (p for p in text.parent.glob(text.stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES),
            None,
        )
        if image is not None:
            expected = text.read_bytes().decode("utf-8", errors="replace")
            yield Item(text.stem, category or folder.name, image, Truth(texts=(expected,)))


def yolo_folder(folder: Path, category: str | None = None) -> Iterator[Item]:
    from PIL import Image

    for image in sorted((folder / "images").iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        label = folder / "labels" / (image.stem + ".txt")
        with Image.open(image) as opened:
            width, height = opened.size
        boxes = []
        for line in label.read_text().splitlines() if label.exists() else []:
            values = [float(v) for v in line.split()[1:]]
            if len(values) == 4:
                cx, cy, w, h = values
                xs, ys = [cx - w / 2, cx + w / 2], [cy - h / 2, cy + h / 2]
            elif len(values) >= 6:  # a polygon label: use its bounding box
                xs, ys = values[0::2], values[1::2]
            else:
                continue
            boxes.append((min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height))
        yield Item(
            image.stem, category or folder.name, image, Truth(boxes=tuple(boxes), has_content=False)
        )


def detect(folder: Path) -> Iterator[Item]:
    """Pick the reader for a folder by what it holds."""
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        return yolo_folder(folder)
    if any(folder.glob("*.json")):
        return corpus_folder(folder)
    return text_folder(folder)
