"""False reads and speed of our own QR decoder (worker/engine/qr).

    python -m worker.bench.false_reads --count 100000     # crops that must never decode
    python -m worker.bench.false_reads --speed            # median ms per symbol, versions 1-10
    python -m worker.bench.false_reads --rs-speed         # reedsolo's ms per block
    python -m worker.bench.false_reads --corpus glare,lowres --per-category 30   # vs zxing-cpp
    python -m worker.bench.false_reads --micro --count 4000   # the Micro QR look's reads

The false-read crops are of seven kinds, drawn in turn from one seed:

- noise: uniform random pixels; blobs: blurred noise, thresholded or not;
- modules: a random module grid (no finder patterns) at 2-6 px a module;
- mock_qr: a real symbol's function patterns, format and version information with random
  data modules (everything a reader checks before Reed-Solomon is valid);
- mock_qr_warped: the same, rotated, in perspective, blurred and noisy;
- half_code: a real symbol with 35-65% of its area replaced by random modules; reading
  it right is allowed, reading anything else is a misread;
- decoy: models.synth's page decoys (linear barcodes, Data Matrix, Aztec, PDF417, finder
  logos, mosaics, tables, stamps, halftone).

Every crop is handed to decode() with the whole crop as its region. A false read is any
read of a crop that holds no symbol, or a read of a half code that differs from its payload.

`--micro` checks the other reader a crop can reach, the Micro QR look of the first detector
stage (worker.engine.stages.micro: one finder pattern at a faint detector place, read by
zxing-cpp as Micro QR alone, enlarged and deblurred). Each crop is one place given to
`micro.look_at`, in turn: a mock Micro QR symbol (real finder, timing and format modules,
random data, M2-M4, 2-5 px a module), the same turned, in perspective and degraded, a real
Micro QR symbol (which must read right: the harness works), and the seven kinds above (a place
of at most 120 px of each, as the look takes no larger box). Any read but a real symbol's
own payload is a false read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import reedsolo
import segno

from worker.engine.qr import decode
from worker.engine.qr.codewords import syndromes_zero
from worker.engine.qr.tables import blocks, layout
from worker.engine.results import Quad
from worker.engine.stages import micro

KINDS = (
    "noise",
    "blobs",
    "modules",
    "mock_qr",
    "mock_qr_warped",
    "half_code",
    "decoy",
)


@dataclass(frozen=True, slots=True)
class Crop:
    kind: str
    image: np.ndarray
    region: Quad
    payload: bytes | None  # the true content of a half code; None where nothing is there


def whole(image: np.ndarray) -> Quad:
    h, w = image.shape
    return ((0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h)))


def render(
    modules: np.ndarray, px: int, border: int = 4, ink: int = 0, paper: int = 255
) -> np.ndarray:
    """A module grid (True = dark) as an upright image, `px` pixels a module."""
    grid = np.pad(modules.astype(bool), border)
    image = np.where(grid, ink, paper).astype(np.uint8)
    return np.kron(image, np.ones((px, px), dtype=np.uint8))


def warp(
    image: np.ndarray,
    rng: np.random.Generator,
    angle: float | None = None,
    perspective: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """`image` rotated by `angle` (random when None) with random perspective of up to
    `perspective` (fraction of the side) on a white canvas; the 3x3 map from input pixels."""
    h, w = image.shape
    if angle is None:
        angle = float(rng.uniform(0, 360))
    side = int(np.hypot(h, w) * (1 + perspective)) + 8
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    centred = src - [w / 2, h / 2]
    jitter = rng.uniform(-perspective, perspective, size=(4, 2)) * max(h, w)
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    dst = centred @ rot.T + jitter + side / 2
    matrix = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    out = cv2.warpPerspective(image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=255)
    return out, matrix


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image
    if rng.random() < 0.7:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.4, 1.8)))
    if rng.random() < 0.7:
        noise = rng.normal(0, float(rng.uniform(2, 14)), out.shape)
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    return out


class CropSource:
    """The crops of `KINDS`, deterministic per (seed, index)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        setup = np.random.default_rng([seed, 1])
        self.symbols: list[segno.QRCode] = []
        for index in range(60):
            version = int(setup.integers(1, 16))
            level = "LMQH"[index % 4]
            length = int(setup.integers(1, 40))
            text = "".join(chr(int(c)) for c in setup.integers(0x21, 0x7F, size=length))
            self.symbols.append(
                segno.make_qr(
                    text, version=max(version, 1), error=level, mask=index % 8, boost_error=False
                )
                if _fits(text, version, level)
                else segno.make_qr(text, error=level, mask=index % 8, boost_error=False)
            )
        from models.synth.decoys import DECOYS

        self.decoys = list(DECOYS.items())

    def crop(self, index: int) -> Crop:
        rng = np.random.default_rng([self.seed, 2, index])
        kind = KINDS[index % len(KINDS)]
        return getattr(self, f"_{kind}")(rng)

    def __iter__(self) -> Iterator[Crop]:
        index = 0
        while True:
            yield self.crop(index)
            index += 1

    def _noise(self, rng: np.random.Generator) -> Crop:
        h, w = (int(v) for v in rng.integers(40, 260, size=2))
        image = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        return Crop("noise", image, whole(image), None)

    def _blobs(self, rng: np.random.Generator) -> Crop:
        h, w = (int(v) for v in rng.integers(60, 300, size=2))
        field = cv2.GaussianBlur(
            rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.8, 6))
        )
        field = (field - field.min()) / max(1e-6, float(field.max() - field.min()))
        if rng.random() < 0.5:
            field = (field > float(np.median(field))).astype(np.float32)
        image = (field * 255).astype(np.uint8)
        return Crop("blobs", image, whole(image), None)

    def _modules(self, rng: np.random.Generator) -> Crop:
        n = int(rng.integers(21, 62))
        modules = rng.random((n, n)) < 0.5
        image = render(modules, int(rng.integers(2, 7)), border=int(rng.integers(0, 5)))
        if rng.random() < 0.5:
            image, _ = warp(image, rng, perspective=0.05)
        return Crop("modules", _degrade(image, rng), whole(image), None)

    def _mock_modules(self, rng: np.random.Generator) -> np.ndarray:
        symbol = self.symbols[int(rng.integers(len(self.symbols)))]
        modules = np.array(symbol.matrix, dtype=bool)
        lay = layout(symbol.version)
        noise = rng.random(modules.shape) < 0.5
        return np.where(lay.function, modules, noise)

    def _mock_qr(self, rng: np.random.Generator) -> Crop:
        image = render(self._mock_modules(rng), int(rng.integers(2, 6)))
        return Crop("mock_qr", image, whole(image), None)

    def _mock_qr_warped(self, rng: np.random.Generator) -> Crop:
        image = render(self._mock_modules(rng), int(rng.integers(2, 6)))
        image, _ = warp(image, rng, perspective=float(rng.uniform(0, 0.08)))
        image = _degrade(image, rng)
        return Crop("mock_qr_warped", image, whole(image), None)

    def _half_code(self, rng: np.random.Generator) -> Crop:
        symbol = self.symbols[int(rng.integers(len(self.symbols)))]
        modules = np.array(symbol.matrix, dtype=bool)
        n = modules.shape[0]
        share = float(rng.uniform(0.35, 0.65))
        if rng.random() < 0.5:
            cut = round(n * share)
            modules[:, n - cut :] = rng.random((n, cut)) < 0.5
        else:
            cut = round(n * share)
            modules[n - cut :, :] = rng.random((cut, n)) < 0.5
        image = render(modules, int(rng.integers(2, 6)))
        if rng.random() < 0.5:
            image, _ = warp(image, rng, perspective=0.04)
            image = _degrade(image, rng)
        payload = symbol_payload(symbol)
        return Crop("half_code", image, whole(image), payload)

    def _decoy(self, rng: np.random.Generator) -> Crop:
        side = int(rng.integers(120, 360))
        page = np.full((side, side), 255, dtype=np.uint8)
        _name, draw = self.decoys[int(rng.integers(len(self.decoys)))]
        draw(page, (8, 8, side - 8, side - 8), rng)
        if rng.random() < 0.5:
            page = _degrade(page, rng)
        return Crop("decoy", page, whole(page), None)


def _fits(text: str, version: int, level: str) -> bool:
    try:
        segno.make_qr(text, version=version, error=level)
    except segno.DataOverflowError:
        return False
    return True


def symbol_payload(symbol: segno.QRCode) -> bytes:
    """The bytes zxing-cpp reports for a symbol, read back from its clean render."""
    import zxingcpp

    image = render(np.array(symbol.matrix, dtype=bool), 4)
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    return bytes(found[0].bytes)


def false_reads(count: int, seed: int) -> int:
    source = CropSource(seed)
    by_kind: Counter[str] = Counter()
    bad: Counter[str] = Counter()
    correct = 0
    start = time.perf_counter()
    for index in range(count):
        if index and index % 10000 == 0:
            print(f"{index} crops, {sum(bad.values())} false reads", flush=True)
        crop = source.crop(index)
        by_kind[crop.kind] += 1
        read = decode(crop.image, crop.region, budget_units=100)
        if read is None:
            continue
        if crop.payload is not None and read.data == crop.payload:
            correct += 1
            continue
        bad[crop.kind] += 1
        print(f"FALSE READ: crop {index} ({crop.kind}, seed {seed}): {read.data!r}", flush=True)
    elapsed = time.perf_counter() - start
    print(f"crops: {count} ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))})")
    print(f"half codes read correctly: {correct}")
    print(f"seconds: {elapsed:.0f}")
    print(f"false reads: {sum(bad.values())}" + (f" ({dict(bad)})" if bad else ""))
    return sum(bad.values())


MICRO_KINDS = ("mock_micro", "mock_micro_warped", "micro", *KINDS)
# What the look's gate takes: a detector box of at most micro.MAX_BOX_PX; a little less,
# so the margin the gate adds stays inside it.
_MICRO_PLACE_PX = 120


def _micro_modules(symbol: segno.QRCode) -> tuple[np.ndarray, np.ndarray]:
    """A Micro QR symbol's modules and its function modules (finder, separator and format
    information in the top-left 9x9, timing along the top row and the left column)."""
    modules = np.array(symbol.matrix, dtype=bool)
    n = modules.shape[0]
    rows, cols = np.indices((n, n))
    function = ((rows <= 8) & (cols <= 8)) | (rows == 0) | (cols == 0)
    return modules, function


class MicroCropSource:
    """The crops of MICRO_KINDS, deterministic per (seed, index), each with its place."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.crops = CropSource(seed)
        setup = np.random.default_rng([seed, 3])
        self.symbols: list[tuple[segno.QRCode, bytes]] = []
        for index in range(40):
            version = ("M2", "M3", "M4")[index % 3]
            digits = "".join(
                str(int(d)) for d in setup.integers(0, 10, size=int(setup.integers(1, 9)))
            )
            symbol = segno.make_micro(digits, version=version, error="L", boost_error=False)
            self.symbols.append((symbol, digits.encode()))

    def crop(self, index: int) -> tuple[Crop, tuple[float, float, float, float]]:
        rng = np.random.default_rng([self.seed, 4, index])
        kind = MICRO_KINDS[index % len(MICRO_KINDS)]
        if kind in KINDS:
            crop = getattr(self.crops, f"_{kind}")(rng)
            image = crop.image
            h, w = image.shape
            side_y, side_x = min(h, _MICRO_PLACE_PX), min(w, _MICRO_PLACE_PX)
            y0 = int(rng.integers(0, h - side_y + 1))
            x0 = int(rng.integers(0, w - side_x + 1))
            return crop, (float(x0), float(y0), float(x0 + side_x), float(y0 + side_y))
        symbol, payload = self.symbols[int(rng.integers(len(self.symbols)))]
        modules, function = _micro_modules(symbol)
        if kind != "micro":
            modules = np.where(function, modules, rng.random(modules.shape) < 0.5)
        px = int(rng.integers(2, 6))
        image = render(modules, px, border=int(rng.integers(2, 5)))
        if kind == "mock_micro_warped":
            image = np.rot90(image, int(rng.integers(4))).copy()
            image, _ = warp(image, rng, perspective=float(rng.uniform(0, 0.08)))
            if rng.random() < 0.5:
                image = _degrade(image, rng)
        # Paper around it, as on a page: the look reaches 18 modules from the finder.
        image = np.pad(image, 20 * px, constant_values=255)
        h, w = image.shape
        # The detector's box: the symbol and some slack, centred on it.
        side = min(float(modules.shape[0] * px * 1.4), _MICRO_PLACE_PX)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return Crop(kind, image, whole(image), payload if kind == "micro" else None), box


def micro_false_reads(count: int, seed: int) -> int:
    """The Micro QR look over `count` places (MICRO_KINDS in turn); returns the false reads."""
    source = MicroCropSource(seed)
    by_kind: Counter[str] = Counter()
    gated: Counter[str] = Counter()  # places where the gate found one finder and zxing read
    bad: Counter[str] = Counter()
    correct = 0
    start = time.perf_counter()
    for index in range(count):
        crop, box = source.crop(index)
        by_kind[crop.kind] += 1
        read = micro.look_at(crop.image, box)
        if read is None:
            continue
        gated[crop.kind] += 1
        for symbol in read:
            if crop.payload is not None and symbol.data == crop.payload:
                correct += 1
                continue
            bad[crop.kind] += 1
            print(
                f"FALSE READ: place {index} ({crop.kind}, seed {seed}): {symbol.data!r}", flush=True
            )
    elapsed = time.perf_counter() - start
    print(f"places: {count} ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))})")
    print(f"past the finder gate: {', '.join(f'{k} {v}' for k, v in sorted(gated.items()))}")
    print(f"real Micro QR symbols read correctly: {correct} of {by_kind['micro']}")
    print(f"seconds: {elapsed:.0f}")
    print(f"false reads: {sum(bad.values())}" + (f" ({dict(bad)})" if bad else ""))
    return sum(bad.values())


def speed(per_version: int, seed: int) -> None:
    """Median decode time per symbol, versions 1-10: random payloads filling 50-100% of the
    symbol, every level, 3-5 px a module, any rotation, mild blur."""
    rng = np.random.default_rng([seed, 3])
    times: dict[int, list[float]] = {}
    cpu: list[float] = []
    unread = 0
    for version in range(1, 11):
        for index in range(per_version):
            level = "LMQH"[index % 4]
            capacity = _capacity(version, level)
            length = max(1, int(capacity * float(rng.uniform(0.5, 1.0))))
            data = bytes(int(b) for b in rng.integers(0x20, 0x7F, size=length))
            symbol = segno.make_qr(data, version=version, error=level, boost_error=False)
            image = render(np.array(symbol.matrix, dtype=bool), int(rng.integers(3, 6)))
            image, _matrix = warp(image, rng)
            image = cv2.GaussianBlur(image, (0, 0), 0.6)
            region = whole(image)
            decode(image, region)  # warm caches for this version
            started, started_cpu = time.perf_counter(), time.thread_time()
            read = decode(image, region)
            times.setdefault(version, []).append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - started_cpu) * 1000)
            if read is None or read.data != data:
                unread += 1
    everything = [t for values in times.values() for t in values]
    for version, values in times.items():
        median = statistics.median(values)
        print(f"version {version:2d}: median {median:5.2f} ms, max {max(values):6.2f} ms")
    print(f"symbols: {len(everything)}, unread: {unread}")
    print(f"median per symbol, versions 1-10: {statistics.median(everything):.2f} ms")
    # The decoder runs in one thread: its CPU time is what it costs whatever else the
    # machine runs (on a shared machine the clock above also counts waiting for a core).
    print(f"median CPU per symbol, versions 1-10: {statistics.median(cpu):.2f} ms")
    print(f"load average (1 min): {os.getloadavg()[0]:.1f}")


def rs_speed(seed: int) -> None:
    """reedsolo's time per block, for the blocks of versions 1-10 at every level: a clean
    block (our vectorised syndrome check only), a quarter of the parity in errors, and half
    of it in erasures."""
    rng = np.random.default_rng([seed, 4])
    clean: list[float] = []
    errors: list[float] = []
    erasures: list[float] = []
    for version in range(1, 11):
        for level in "LMQH":
            block = blocks(version, level)[0]
            nsym = block.total - block.data
            for _ in range(20):
                message = bytes(int(b) for b in rng.integers(0, 256, size=block.data))
                word = np.frombuffer(bytes(reedsolo.rs_encode_msg(message, nsym)), np.uint8)
                started = time.perf_counter()
                syndromes_zero(word, nsym)
                clean.append((time.perf_counter() - started) * 1000)
                damaged = bytearray(word.tobytes())
                for index in rng.choice(block.total, size=nsym // 4, replace=False):
                    damaged[int(index)] ^= int(rng.integers(1, 256))
                started = time.perf_counter()
                reedsolo.rs_correct_msg(damaged, nsym)
                errors.append((time.perf_counter() - started) * 1000)
                erased = [int(i) for i in rng.choice(block.total, size=nsym // 2, replace=False)]
                damaged = bytearray(word.tobytes())
                for index in erased:
                    damaged[index] = 0
                started = time.perf_counter()
                reedsolo.rs_correct_msg(damaged, nsym, erase_pos=erased)
                erasures.append((time.perf_counter() - started) * 1000)
    for name, values in (("clean (syndromes)", clean), ("errors", errors), ("erasures", erasures)):
        median = statistics.median(values)
        print(f"{name:18s}: median {median:.3f} ms, max {max(values):.3f} ms per block")


def corpus(categories: list[str], per_category: int) -> int:
    """Our decoder against zxing-cpp on models.synth's labelled codes: ours is handed each
    code's true outline, zxing-cpp the crop around it (30% margin, every try option); both
    must give the code's exact bytes. Returns the misreads (ours)."""
    import zxingcpp

    from models.synth.corpus import corpus_sample

    misreads = 0
    for category in categories:
        counts: Counter[str] = Counter()
        times: list[float] = []
        for index in range(per_category):
            sample = corpus_sample(category, index)
            if sample.fmt == "pdf":
                continue
            page = cv2.imdecode(np.frombuffer(sample.data, np.uint8), cv2.IMREAD_GRAYSCALE)
            if page is None:
                continue
            for code in sample.codes:
                if code.format != "QRCode" or code.page != 0:
                    continue
                quad = np.array(code.quad)
                margin = 0.3 * float((quad.max(axis=0) - quad.min(axis=0)).max())
                x0, y0 = np.maximum(quad.min(axis=0) - margin, 0).astype(int)
                x1, y1 = (quad.max(axis=0) + margin).astype(int)
                found = zxingcpp.read_barcodes(
                    page[y0:y1, x0:x1], formats=zxingcpp.BarcodeFormat.QRCode
                )
                theirs = any(bytes(b.bytes) == code.payload for b in found)
                started = time.perf_counter()
                read = decode(page, code.quad, budget_units=200)
                times.append((time.perf_counter() - started) * 1000)
                ours = read is not None and read.data == code.payload
                counts["codes"] += 1
                counts["zxing-cpp"] += theirs
                counts["ours"] += ours
                counts["ours only"] += ours and not theirs
                counts["zxing-cpp only"] += theirs and not ours
                counts["misreads"] += read is not None and not ours
        misreads += counts["misreads"]
        median = statistics.median(times) if times else 0.0
        print(f"{category}: {dict(counts)}, our median {median:.1f} ms")
    return misreads


def _capacity(version: int, level: str) -> int:
    low, high = 1, 3000
    while low < high:
        mid = (low + high + 1) // 2
        try:
            segno.make_qr(b"a" * mid, version=version, error=level, boost_error=False)
            low = mid
        except segno.DataOverflowError:
            high = mid - 1
    return low


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="crops to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", action="store_true", help="measure decode time instead")
    parser.add_argument(
        "--rs-speed", action="store_true", help="measure reedsolo's time per block instead"
    )
    parser.add_argument(
        "--corpus",
        help="compare with zxing-cpp on these models.synth categories instead (comma-separated)",
    )
    parser.add_argument("--per-category", type=int, default=30, help="samples per category")
    parser.add_argument("--per-version", type=int, default=40, help="symbols per version (--speed)")
    parser.add_argument(
        "--micro", action="store_true", help="the Micro QR look's places instead of decode()'s"
    )
    args = parser.parse_args(argv)
    if args.speed:
        speed(args.per_version, args.seed)
        return 0
    if args.rs_speed:
        rs_speed(args.seed)
        return 0
    if args.corpus:
        return 1 if corpus(args.corpus.split(","), args.per_category) else 0
    if args.micro:
        return 1 if micro_false_reads(args.count, args.seed) else 0
    return 1 if false_reads(args.count, args.seed) else 0


if __name__ == "__main__":
    sys.exit(main())
