"""The floor of reading a born-digital PDF without rendering a whole page (issue 22's median
target), step by step.

    python -m worker.bench.pdf_floor [--count 40] [--repeat 9]

Issue 22 asks for a born-digital document's scan median at most 1.2x one render of its
pages at the fast pass's resolution (worker.bench.pdf_speed's denominator: each page of a
document already open and rendered before, fonts and resources parsed). A scan that never
renders a whole page still has to open the document, load each page (PDFium parses its
content and loads its fonts), classify it, find in its objects where a code could be,
render those regions at born_digital.MIN_PX_PER_MODULE, read them, and cross to the
renderer child and back. Each step here is timed as that path would do it at its cheapest,
in CPU time of this process, on a document opened afresh for every repeat (as a scan gets
it), alternately with the two renders it is compared with:

- open: the stream check, PDFium's open, the page sizes (worker.engine.pdf);
- load: each page loaded (the content parsed: the dearest step);
- kinds: each loaded page classified (pdf_pages.inspect_page);
- walk: a second walk of its objects for code candidates, the least a rule set needs: a
  path of OBJECT_SEGMENTS segments or more (its module from its first rectangles), every
  image, every text object's font flags;
- region: each candidate rendered in the same page visit, its quiet zone included, at
  MIN_PX_PER_MODULE;
- read: zxing on each region as the cascade reads (zxing_reader.read), and `read, lean`
  with no downscale or rotation (not what the cascade does: what reading could go down to);
- round trip: one request to the renderer child and its reply (a ping), CPU of both
  processes;
- engine: Engine.scan's own work on a PDF (an engine with no stages, PDFium in this
  process) less its open, loads and kinds.

Nothing here decides whether a page may be settled from its objects: the steps are the
least such a path costs, the rules that make it safe (fill colours, patterns, clips, Type 3
and symbolic fonts, annotations) are left out and would only add to it.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.synth.pdfs import pdf_set
from models.synth.samples import Sample
from worker.bench.pdf_speed import fast_scales, render_pages, without_codes
from worker.bench.report import machine_line
from worker.engine import Engine, isolation, pdf_pages, zxing_reader
from worker.engine import pdf as pdf_module
from worker.engine.stages.born_digital import MIN_PX_PER_MODULE
from worker.settings import Settings

COMMAND = "python -m worker.bench.pdf_floor"
STEPS = ("open", "load", "kinds", "walk", "region", "read", "round trip", "engine")
# A path of this many segments or more could be a code drawn as one path: a rectangle is 4
# (move, three lines, closed), and the smallest Micro QR symbol has more than 8 dark runs.
OBJECT_SEGMENTS = 32
# Rectangle subpaths whose sides give a path's module size: its first few.
_MODULE_RECTS = 10
# A code's quiet zone, in modules, around each region rendered.
_QUIET = 4
_LEAN = zxing_reader.ReadOptions(try_downscale=False, try_rotate=False)


@dataclass
class Floor:
    """One document's medians over the repeats, CPU milliseconds."""

    render: float  # pdf_speed's denominator: every page rendered once, the document warm
    cold: float  # the document opened afresh and every page rendered once
    steps: dict[str, float] = field(default_factory=dict)
    lean: float = 0.0  # `read` with _LEAN's options
    candidates: int = 0
    read: int = 0
    codes: int = 0

    @property
    def total(self) -> float:
        return sum(self.steps.values())


@dataclass
class _Candidate:
    page: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in page points, y down
    module: float  # page points


def _cpu_ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.process_time()
    value = fn()
    return (time.process_time() - started) * 1000.0, value


def _bounds(raw: Any, page_h: float) -> tuple[float, float, float, float]:
    import pypdfium2.raw as pdfium_c

    left, bottom, right, top = (ctypes.c_float() for _ in range(4))
    pdfium_c.FPDFPageObj_GetBounds(raw, left, bottom, right, top)
    return left.value, page_h - top.value, right.value, page_h - bottom.value


def _path_module(raw: Any, segments: int) -> float:
    """The smallest side of the path's first rectangle subpaths, in page points: a module,
    where a code is drawn a rectangle a module or a run of modules."""
    import pypdfium2.raw as pdfium_c

    x, y = ctypes.c_float(), ctypes.c_float()
    points = []
    for index in range(min(segments, 4 * _MODULE_RECTS)):
        pdfium_c.FPDFPathSegment_GetPoint(pdfium_c.FPDFPath_GetPathSegment(raw, index), x, y)
        points.append((x.value, y.value))
    sides = []
    for start in range(0, len(points) - 3, 4):
        xs, ys = zip(*points[start : start + 4], strict=True)
        sides += [side for side in (max(xs) - min(xs), max(ys) - min(ys)) if side > 0]
    matrix = pdfium_c.FS_MATRIX()
    pdfium_c.FPDFPageObj_GetMatrix(raw, matrix)
    scale = math.sqrt(abs(matrix.a * matrix.d - matrix.b * matrix.c))
    return min(sides, default=math.inf) * scale


def _walk(page: Any, index: int) -> list[_Candidate]:
    import pypdfium2.raw as pdfium_c

    page_h = page.get_height()
    found = []
    for raw, kind, _, _ in pdf_pages._objects(pdfium_c, page):
        if kind == pdfium_c.FPDF_PAGEOBJ_PATH:
            segments = pdfium_c.FPDFPath_CountSegments(raw)
            if segments >= OBJECT_SEGMENTS:
                module = _path_module(raw, segments)
                if math.isfinite(module):
                    found.append(_Candidate(index, _bounds(raw, page_h), module))
        elif kind == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            width, height = ctypes.c_uint(), ctypes.c_uint()
            pdfium_c.FPDFImageObj_GetImagePixelSize(raw, width, height)
            box = _bounds(raw, page_h)
            # A module is one image pixel or more.
            pixel = min(
                (box[2] - box[0]) / max(width.value, 1), (box[3] - box[1]) / max(height.value, 1)
            )
            found.append(_Candidate(index, box, pixel))
        elif kind == pdfium_c.FPDF_PAGEOBJ_TEXT:
            pdfium_c.FPDFFont_GetFlags(pdfium_c.FPDFTextObj_GetFont(raw))
    return found


def _render_region(page: Any, candidate: _Candidate) -> np.ndarray:
    """`candidate` and its quiet zone rendered from `page`, already loaded, at
    MIN_PX_PER_MODULE (pdf_pages.render_region's drawing, without loading the page again)."""
    import pypdfium2.raw as pdfium_c

    scale = MIN_PX_PER_MODULE / candidate.module
    margin = _QUIET * candidate.module
    x0, y0, x1, y1 = candidate.box
    left, top = math.floor((x0 - margin) * scale), math.floor((y0 - margin) * scale)
    width = max(1, math.ceil((x1 + margin) * scale) - left)
    height = max(1, math.ceil((y1 + margin) * scale) - top)
    image = np.empty((height, width), np.uint8)
    buffer = (ctypes.c_ubyte * image.size).from_buffer(image)
    bitmap = pdfium_c.FPDFBitmap_CreateEx(width, height, pdfium_c.FPDFBitmap_Gray, buffer, width)
    try:
        pdfium_c.FPDFBitmap_FillRect(bitmap, 0, 0, width, height, 0xFFFFFFFF)
        matrix = pdfium_c.FS_MATRIX(scale, 0.0, 0.0, scale, -float(left), -float(top))
        clip = pdfium_c.FS_RECTF(0.0, 0.0, float(width), float(height))
        flags = pdfium_c.FPDF_GRAYSCALE | pdfium_c.FPDF_ANNOT
        pdfium_c.FPDF_RenderPageBitmapWithMatrix(bitmap, page, matrix, clip, flags)
    finally:
        pdfium_c.FPDFBitmap_Destroy(bitmap)
    return image


def _one_pass(data: bytes, max_pages: int) -> tuple[dict[str, float], list[np.ndarray], int]:
    """open, load, kinds, walk and region for a document opened afresh: CPU ms of each, the
    regions rendered, and the candidates found."""
    spent = dict.fromkeys(("open", "load", "kinds", "walk", "region"), 0.0)

    def opened() -> Any:
        pdf_module.check_streams(data)
        document = pdf_module.open_pdf(data)
        pdf_module.page_sizes(document, max_pages)
        return document

    spent["open"], document = _cpu_ms(opened)
    regions: list[np.ndarray] = []
    candidates = 0
    try:
        for index in range(len(document)):
            ms, page = _cpu_ms(lambda i=index: document[i])
            spent["load"] += ms
            try:
                ms, _ = _cpu_ms(lambda p=page: pdf_pages.inspect_page(p))
                spent["kinds"] += ms
                ms, found = _cpu_ms(lambda p=page, i=index: _walk(p, i))
                spent["walk"] += ms
                candidates += len(found)
                ms, rendered = _cpu_ms(lambda p=page, f=found: [_render_region(p, c) for c in f])
                spent["region"] += ms
                regions += rendered
            finally:
                page.close()
    finally:
        document.close()
    return spent, regions, candidates


def _read(regions: list[np.ndarray], options: zxing_reader.ReadOptions) -> int:
    transform = zxing_reader.Transform()
    return sum(
        symbol.valid
        for region in regions
        for symbol in zxing_reader.read(region, transform, options)
    )


def measure(sample: Sample, settings: Settings, repeat: int, bare: Engine, child: Any) -> Floor:
    """`sample`'s floor: every step and both renders, alternately, `repeat` times."""
    import pypdfium2 as pdfium

    warm = pdfium.PdfDocument(sample.data)
    scales = fast_scales(warm, settings)
    render_pages(warm, scales)
    runs: dict[str, list[float]] = {name: [] for name in (*STEPS, "render", "cold", "lean")}
    read = candidates = 0
    for _ in range(repeat):
        runs["render"].append(_cpu_ms(lambda: render_pages(warm, scales))[0])

        def cold() -> None:
            document = pdfium.PdfDocument(sample.data)
            render_pages(document, scales)
            document.close()

        runs["cold"].append(_cpu_ms(cold)[0])
        spent, regions, candidates = _one_pass(sample.data, settings.max_pages)
        for name, ms in spent.items():
            runs[name].append(ms)
        ms, read = _cpu_ms(lambda r=regions: _read(r, zxing_reader.FAST))
        runs["read"].append(ms)
        runs["lean"].append(_cpu_ms(lambda r=regions: _read(r, _LEAN))[0])
        runs["round trip"].append(_round_trip_ms(child))
        ms, _ = _cpu_ms(lambda: bare.scan(sample.data))
        runs["engine"].append(ms - spent["open"] - spent["load"] - spent["kinds"])
    warm.close()
    median = {name: statistics.median(values) for name, values in runs.items()}
    return Floor(
        render=median["render"],
        cold=median["cold"],
        steps={name: median[name] for name in STEPS},
        lean=median["lean"],
        candidates=candidates,
        read=read,
        codes=len(sample.codes),
    )


def _round_trip_ms(child: Any) -> float:
    """CPU ms of one ping to `child`, in both processes: the child's from its schedstat,
    read outside this process's timed span (reading /proc costs more than the ping)."""
    with open(f"/proc/{child.pid}/schedstat") as stat:
        child_before = int(stat.read().split()[0])
    ms, _ = _cpu_ms(lambda: child.request({"op": "ping"}))
    with open(f"/proc/{child.pid}/schedstat") as stat:
        child_ms = (int(stat.read().split()[0]) - child_before) / 1e6
    return ms + child_ms


def floors(samples: list[Sample], settings: Settings, repeat: int) -> list[Floor]:
    bare = Engine(replace(settings, pdf_child=False), stages=[])
    child = isolation._CHILDREN.take(settings.pdf_child_memory_mb)
    try:
        child.request({"op": "ping"})
        return [measure(sample, settings, repeat, bare, child) for sample in samples]
    finally:
        isolation._CHILDREN.give_back(child)


def report(name: str, results: list[Floor]) -> str:
    """The steps' medians over the documents, in ms and as shares of the median warm render
    (pdf_speed's ratio of medians), and the sum's against both renders."""
    render = statistics.median(f.render for f in results)
    cold = statistics.median(f.cold for f in results)
    total = statistics.median(f.total for f in results)
    lines = [
        f"{name}: {len(results)} documents, {sum(f.codes for f in results)} codes, "
        f"{sum(f.candidates for f in results)} candidates, "
        f"{sum(f.read for f in results)} read from their regions",
        "",
        "| step | CPU median ms | x the warm render |",
        "|---|---|---|",
        f"| warm render of the pages (pdf_speed's denominator) | {render:.3f} | 1.00x |",
        f"| cold: opened afresh, each page rendered once | {cold:.3f} | {cold / render:.2f}x |",
    ]
    for step in STEPS:
        ms = statistics.median(f.steps[step] for f in results)
        lines.append(f"| {step} | {ms:.3f} | {ms / render:.2f}x |")
    lean = statistics.median(f.lean for f in results)
    per_document = statistics.median(f.total / f.render for f in results)
    lines += [
        f"| (read, lean: no downscale, no rotation) | {lean:.3f} | {lean / render:.2f}x |",
        f"| **every step** (median of the sums) | {total:.3f} | **{total / render:.2f}x** "
        f"(per document {per_document:.2f}x; {total / cold:.2f}x the cold render) |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="documents per generated set")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    load = os.getloadavg()[0]
    with_codes = floors(pdf_set(22, args.count, "pdf_digital"), settings, args.repeat)
    without = floors(without_codes(args.count), settings, args.repeat)
    print(f"Command: `{COMMAND} --count {args.count} --repeat {args.repeat}`")
    print(
        f"Machine: {machine_line()}; 1-min load {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    print(report("born-digital, 1-3 pages", with_codes))
    print()
    print(report("born-digital, no code", without))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
