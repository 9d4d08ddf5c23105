"""Scoring reads against truth: exact bytes, or it did not count.

- An image is *decoded* when every expected code was read with the exact bytes (or,
  where only texts are known, the exact text).
- A *misread* is a code read whose content matches nothing on the page: the worst
  outcome for a billing system, and it must be zero.
- On pages with no code, every read is a *false read*.
- Where only boxes are known, a box counts as *found* when a code was read whose
  corners' bounding box overlaps it with IoU >= 0.5.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from worker.bench.readers import Read
from worker.bench.sources import Box, Truth


@dataclass(frozen=True, slots=True)
class Score:
    expected: int  # codes (or boxes) on the page
    correct: int  # of them, read exactly (or found)
    misreads: int
    false_reads: int
    decoded: bool  # every expected code read (pages with codes only)
    found: tuple[bool, ...] = ()  # box-only truth: whether each labelled box was read


def _matches(read: Read, truth: Truth) -> bool:
    if truth.payloads:
        if read.data is not None:
            return read.data in truth.payloads
        # A peer that only gives text: compare with the payload as text, both ways a
        # reader may have decoded it (UTF-8, or ISO-8859-1 as QR does without an ECI).
        return any(read.text in _as_texts(payload) for payload in truth.payloads)
    if truth.texts:
        text = read.text if read.text is not None else (read.data or b"").decode("utf-8", "replace")
        return text in truth.texts
    return False


def _as_texts(payload: bytes) -> set[str]:
    texts = {payload.decode("latin-1")}
    with contextlib.suppress(UnicodeDecodeError):
        texts.add(payload.decode("utf-8"))
    return texts


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _box(read: Read) -> Box | None:
    if not read.quad:
        return None
    xs, ys = [p[0] for p in read.quad], [p[1] for p in read.quad]
    return (min(xs), min(ys), max(xs), max(ys))


def score(reads: list[Read], truth: Truth) -> Score:
    if not truth.has_content:
        boxes = [b for b in (_box(r) for r in reads) if b is not None]
        hits = tuple(any(iou(box, b) >= 0.5 for b in boxes) for box in truth.boxes)
        found = sum(hits)
        return Score(len(truth.boxes), found, 0, 0, found == len(truth.boxes) > 0, hits)
    expected = list(truth.payloads) or list(truth.texts)
    if not expected:
        return Score(0, 0, 0, len(reads), False)
    good = [r for r in reads if _matches(r, truth)]
    if truth.payloads:
        correct = sum(
            any(r.data == p if r.data is not None else r.text in _as_texts(p) for r in good)
            for p in truth.payloads
        )
    else:
        correct = sum(any(_matches(r, Truth(texts=(t,))) for r in good) for t in truth.texts)
    return Score(len(expected), correct, len(reads) - len(good), 0, correct == len(expected))
