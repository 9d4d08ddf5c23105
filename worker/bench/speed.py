"""Scan time against the time to merely decode the same file with OpenCV.

    python -m worker.bench.speed [--count 40] [--repeat 5] [--out docs/benchmarks.md]

Both are timed in this one process, image by image and interleaved, so machine noise
hits both sides alike; the headline is the ratio of medians. The target for digital
invoices: a full scan costs at most 1.5x a plain full-size decode.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.synth import digital_invoice, photo_invoice
from models.synth.samples import Sample
from worker.bench.report import machine_line, percentile, write_section
from worker.engine import Engine
from worker.settings import Settings

COMMAND = "python -m worker.bench.speed"


@dataclass
class Row:
    name: str
    decode_ms: list[float]
    scan_ms: list[float]
    read: int
    total: int
    fast_only: int

    def summary(self) -> dict[str, float | int | str]:
        dm, sm = percentile(self.decode_ms, 50), percentile(self.scan_ms, 50)
        return {
            "set": self.name,
            "images": self.total,
            "decoded": self.read,
            "fast_only": self.fast_only,
            "decode_median_ms": round(dm, 2),
            "decode_p95_ms": round(percentile(self.decode_ms, 95), 2),
            "scan_median_ms": round(sm, 2),
            "scan_p95_ms": round(percentile(self.scan_ms, 95), 2),
            "ratio_median": round(sm / dm, 2),
            "ratio_p95": round(percentile(self.scan_ms, 95) / percentile(self.decode_ms, 95), 2),
        }


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    # The median of a few repeats per image damps one-off stalls of a shared machine.
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times))


def _plain_decode(data: bytes, settings: Settings) -> Callable[[], object]:
    """What merely decoding the file costs: OpenCV's full-size decode, or for a PDF,
    PDFium rasterising its first page in this process at QRW_PDF_DPI (OpenCV reads no PDF)."""
    if data.startswith(b"%PDF-"):
        import pypdfium2 as pdfium

        document = pdfium.PdfDocument(data)
        scale = settings.pdf_dpi / 72.0
        return lambda: document[0].render(scale=scale, grayscale=True)
    buffer = np.frombuffer(data, np.uint8)
    return lambda: cv2.imdecode(buffer, cv2.IMREAD_COLOR)


def measure(name: str, samples: list[Sample], engine: Engine, repeat: int) -> Row:
    row = Row(name, [], [], 0, len(samples), 0)
    for sample in samples:
        row.decode_ms.append(_best_of(_plain_decode(sample.data, engine.settings), repeat))
        row.scan_ms.append(_best_of(lambda s=sample: engine.scan(s.data), repeat))
        result = engine.scan(sample.data)
        if {c.data for c in result.codes} == {c.payload for c in sample.codes}:
            row.read += 1
        row.fast_only += result.stages_run == ["fast"]
    return row


def corpus(count: int) -> dict[str, list[Sample]]:
    return {
        "digital 2 MP JPEG, grey": [digital_invoice(1000 + i, fmt="jpeg") for i in range(count)],
        "digital 2 MP JPEG, colour": [
            digital_invoice(1500 + i, fmt="jpeg", color=True) for i in range(count)
        ],
        "digital 2 MP PNG, grey": [digital_invoice(2000 + i, fmt="png") for i in range(count)],
        "digital 2 MP PNG, colour": [
            digital_invoice(2500 + i, fmt="png", color=True) for i in range(count)
        ],
        # Rendered by PDFium in a child process unless QRW_PDF_CHILD=false (docs/reliability.md).
        "digital 2 MP PDF, grey": [digital_invoice(3500 + i, fmt="pdf") for i in range(count)],
        "phone photo 2 MP JPEG": [photo_invoice(3000 + i) for i in range(count)],
    }


def render(rows: list[dict[str, float | int | str]], count: int, repeat: int) -> str:
    lines = [
        "## Scan time against a plain OpenCV decode",
        "",
        f"Command: `{COMMAND} --count {count} --repeat {repeat}`  ",
        f"Machine: {machine_line()}",
        "",
        "Per image, the median of the repeats; then the median and 95th percentile over",
        "the images. `decode` is `cv2.imdecode(IMREAD_COLOR)` of the same file, full size",
        "(for a PDF, PDFium rendering its page in-process at QRW_PDF_DPI);",
        "`scan` is `Engine.scan` on the file bytes (header check, decode, cascade).",
        "",
        "| set | images | read | fast stage only | decode median / p95 ms "
        "| scan median / p95 ms | scan / decode, median | p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['images']} | {r['decoded']} | {r['fast_only']} "
            f"| {r['decode_median_ms']} / {r['decode_p95_ms']} "
            f"| {r['scan_median_ms']} / {r['scan_p95_ms']} | {r['ratio_median']}x "
            f"| {r['ratio_p95']}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="markdown file to update")
    args = parser.parse_args(argv)

    engine = Engine(Settings.from_env())
    engine.scan(digital_invoice(0).data)  # first-call costs (imports, allocators) are start-up
    rows = [
        measure(name, samples, engine, args.repeat).summary()
        for name, samples in corpus(args.count).items()
    ]
    text = render(rows, args.count, args.repeat)
    print(text)
    if args.out:
        write_section(args.out, "speed", text)
        args.out.with_name("benchmarks-speed.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
