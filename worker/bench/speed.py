"""Scan time against the time to merely decode the same file with OpenCV.

    python -m worker.bench.speed [--count 40] [--repeat 5] [--out docs/benchmarks.md]
    python -m worker.bench.speed --sets JPEG,PNG   # only the sets whose short name begins so
    python -m worker.bench.speed --sets JPEG,PNG --write FOLDER   # the images, not timed

Both are timed in this one process, image by image and interleaved, so machine noise
hits both sides alike; the headline is the ratio of medians. The target for digital
invoices: a full scan costs at most 1.5x a plain full-size decode.

`--write` saves the sets' images instead, a folder a set (`FOLDER/JPEG_grey`, ...) with
each image's truth beside it (`name.json`, as `python -m models.synth` writes them), so
that `python -m worker.bench.ab OUT.json TREE_A TREE_B FOLDER/*` scans them with two trees
alternating image by image, and compares what each read and left unread.

For PDFs it also times what the renderer child (worker.engine.isolation) costs: the same
document scanned by an engine with `pdf_child` on and by one with it off, alternately
(A B, B A, ...), with no plain decode in between, so neither path is warmed for the other.
The bar (issue 17): a digital invoice's scan through the child within 5% of in-process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.synth import digital_invoice, photo_invoice
from models.synth.__main__ import write_sample
from models.synth.samples import Sample
from worker.bench.report import machine_line, percentile, write_section
from worker.engine import Engine
from worker.harness import renderers
from worker.procfs import cpu_ticks
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


@dataclass
class ChildRow:
    """One PDF set scanned through the renderer child and in-process, document by document."""

    name: str
    child_ms: list[float]
    inprocess_ms: list[float]
    child_cpu_ms: list[float]
    inprocess_cpu_ms: list[float]
    read_child: int
    read_inprocess: int
    total: int

    def summary(self) -> dict[str, float | int | str]:
        cm, im = percentile(self.child_ms, 50), percentile(self.inprocess_ms, 50)
        cp, ip = percentile(self.child_ms, 95), percentile(self.inprocess_ms, 95)
        paired = [c / i for c, i in zip(self.child_ms, self.inprocess_ms, strict=True)]
        return {
            "set": self.name,
            "documents": self.total,
            "read_child": self.read_child,
            "read_in_process": self.read_inprocess,
            "child_median_ms": round(cm, 2),
            "child_p95_ms": round(cp, 2),
            "in_process_median_ms": round(im, 2),
            "in_process_p95_ms": round(ip, 2),
            "ratio_median": round(cm / im, 3),
            "ratio_p95": round(cp / ip, 3),
            "ratio_paired_median": round(percentile(paired, 50), 3),
            "child_cpu_ms": round(float(np.mean(self.child_cpu_ms)), 2),
            "in_process_cpu_ms": round(float(np.mean(self.inprocess_cpu_ms)), 2),
        }


_TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def _renderer_cpu_ms() -> float:
    """CPU time so far of this process's PDF renderer children (10 ms ticks: summed over
    a set's scans the rounding stays under a tick, since they idle between our scans)."""
    return sum(cpu_ticks(pid) for pid in renderers(os.getpid())) * _TICK_MS


def _timed_scan(engine: Engine, data: bytes) -> tuple[float, float]:
    """Wall time and CPU time (this process and its renderer children) of one scan, ms."""
    cpu, children = time.process_time(), _renderer_cpu_ms()
    started = time.perf_counter()
    engine.scan(data)
    wall = (time.perf_counter() - started) * 1000.0
    used = (time.process_time() - cpu) * 1000.0 + _renderer_cpu_ms() - children
    return wall, used


def _reads_all(engine: Engine, sample: Sample) -> bool:
    return {c.data for c in engine.scan(sample.data).codes} == {c.payload for c in sample.codes}


def measure_child(
    name: str, samples: list[Sample], child: Engine, inprocess: Engine, repeat: int
) -> ChildRow:
    row = ChildRow(name, [], [], [], [], 0, 0, len(samples))
    for index, sample in enumerate(samples):
        wall: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for turn in range(repeat):
            # Which path goes first alternates by repeat and by document, so that what one
            # scan leaves in the caches or the heap helps (or hurts) both paths alike.
            first = (index + turn) % 2 == 0
            for through_child in (first, not first):
                took, used = _timed_scan(child if through_child else inprocess, sample.data)
                wall[through_child].append(took)
                cpu[through_child].append(used)
        row.child_ms.append(float(np.median(wall[True])))
        row.inprocess_ms.append(float(np.median(wall[False])))
        row.child_cpu_ms.extend(cpu[True])
        row.inprocess_cpu_ms.extend(cpu[False])
        row.read_child += _reads_all(child, sample)
        row.read_inprocess += _reads_all(inprocess, sample)
    return row


_PDF_SET = "digital 2 MP PDF, grey"


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
        _PDF_SET: [digital_invoice(3500 + i, fmt="pdf") for i in range(count)],
        "phone photo 2 MP JPEG": [photo_invoice(3000 + i) for i in range(count)],
    }


def child_corpus(count: int, sets: dict[str, list[Sample]]) -> dict[str, list[Sample]]:
    """The PDF sets timed through the renderer child and in-process (the 1-page one is
    the speed corpus's own)."""
    return {
        "digital 2 MP PDF, grey, 1 page": sets[_PDF_SET],
        "digital 2 MP PDF, grey, 2-3 pages": [
            digital_invoice(4000 + i, fmt="pdf", pages=2 + i % 2) for i in range(count)
        ],
        "phone photo 2 MP PDF (a scan)": [photo_invoice(4500 + i, fmt="pdf") for i in range(count)],
    }


def short_name(name: str) -> str:
    """A set's short name: `digital 2 MP JPEG, grey` -> `JPEG_grey`, `phone photo 2 MP
    JPEG` -> `phone_photo_2_MP_JPEG` (its folder under --write, and what --sets matches)."""
    return name.removeprefix("digital 2 MP ").replace(", ", "_").replace(" ", "_")


def chosen(sets: dict[str, list[Sample]], wanted: list[str]) -> dict[str, list[Sample]]:
    """The sets whose short name begins with one of `wanted` (all of them for none): `JPEG`
    names the digital JPEG sets, not the phone photos that are JPEGs too."""
    return {
        name: samples
        for name, samples in sets.items()
        if not wanted or short_name(name).startswith(tuple(wanted))
    }


def write_sets(sets: dict[str, list[Sample]], folder: Path) -> list[Path]:
    """Each set's images and truth in a folder of its own under `folder`, named after the
    set's short name, which is also each image's category."""
    written = []
    for name, samples in sets.items():
        slug = short_name(name)
        target = folder / slug
        target.mkdir(parents=True, exist_ok=True)
        for sample in samples:
            write_sample(dataclasses.replace(sample, category=slug), target)
        written.append(target)
    return written


def render(
    rows: list[dict[str, float | int | str]],
    child_rows: list[dict[str, float | int | str]],
    count: int,
    repeat: int,
    sets: str = "",
) -> str:
    only = f" --sets {sets}" if sets else ""
    lines = [
        "## Scan time against a plain OpenCV decode",
        "",
        f"Command: `{COMMAND} --count {count} --repeat {repeat}{only}`  ",
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
    if not child_rows:
        return "\n".join(lines)
    lines += [
        "",
        "### PDFs: the renderer child against PDFium in-process",
        "",
        "The same documents scanned by two engines in this process, one with `pdf_child` on",
        "(PDFium in a reused child process, worker/engine/isolation.py) and one with it off,",
        f"alternately ({repeat} scans each, the first path switching from one repeat and",
        "document to the next) and with no plain decode in between. Per document, the",
        "median of its scans; then the median and 95th percentile over the documents, their",
        "ratio, and the median of the per-document ratios. CPU ms: the mean per scan of this",
        "process's CPU time plus its renderer children's. The 1-page set is the PDF set",
        "above; a 2-3 page document carries one code, so its other pages run the whole",
        "cascade (the detectors, then the thorough pass), which is most of its time.",
        "",
        "| set | documents | read child / in-process | child median / p95 ms "
        "| in-process median / p95 ms | child / in-process, median | p95 "
        "| per document, median | CPU ms per scan, child / in-process |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in child_rows:
        lines.append(
            f"| {r['set']} | {r['documents']} | {r['read_child']} / {r['read_in_process']} "
            f"| {r['child_median_ms']} / {r['child_p95_ms']} "
            f"| {r['in_process_median_ms']} / {r['in_process_p95_ms']} "
            f"| {r['ratio_median']}x | {r['ratio_p95']}x | {r['ratio_paired_median']}x "
            f"| {r['child_cpu_ms']} / {r['in_process_cpu_ms']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="markdown file to update")
    parser.add_argument(
        "--sets",
        default="",
        help="comma-separated beginnings of short set names (JPEG_grey, PNG_colour, PDF_grey, "
        "phone_photo_2_MP_JPEG): only those sets (e.g. JPEG,PNG; the PDF renderer-child "
        "section runs only with the 1-page PDF set); not with --out",
    )
    parser.add_argument(
        "--write",
        type=Path,
        default=None,
        help="write the sets' images and truth under this folder, a folder a set, and time "
        "nothing (for python -m worker.bench.ab)",
    )
    args = parser.parse_args(argv)
    wanted = [part for part in args.sets.split(",") if part]
    if wanted and args.out:
        parser.error("--sets measures part of the section: it cannot update --out")
    if args.write:
        for folder in write_sets(chosen(corpus(args.count), wanted), args.write):
            print(folder)
        return 0

    settings = Settings.from_env()
    engine = Engine(settings)
    engine.scan(digital_invoice(0).data)  # first-call costs (imports, allocators) are start-up
    sets = chosen(corpus(args.count), wanted)
    rows = [measure(name, samples, engine, args.repeat).summary() for name, samples in sets.items()]
    if _PDF_SET not in sets:
        print(render(rows, [], args.count, args.repeat, args.sets))
        return 0

    child = engine if settings.pdf_child else Engine(settings.replace(pdf_child=True))
    inprocess = Engine(settings.replace(pdf_child=False)) if settings.pdf_child else engine
    warm = digital_invoice(0, fmt="pdf").data
    child.scan(warm)  # the renderer child's start, and PDFium's first load in-process
    inprocess.scan(warm)
    child_rows = [
        measure_child(name, samples, child, inprocess, args.repeat).summary()
        for name, samples in child_corpus(args.count, sets).items()
    ]
    text = render(rows, child_rows, args.count, args.repeat)
    print(text)
    if args.out:
        write_section(args.out, "speed", text)
        report = {"scan_against_decode": rows, "pdf_child_against_in_process": child_rows}
        args.out.with_name("benchmarks-speed.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
