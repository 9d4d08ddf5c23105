"""Micro QR codes on photo pages that every QR look misses: the first detector's faint places
with one finder pattern in them, read by zxing-cpp as Micro QR alone at several pixels a module.
The first detector stage (worker.engine.stages.detect) looks, on the pages it reads (photos;
born-digital pages keep their own rules) once the page has a code read.

A Micro QR code printed beside an invoice's QR codes is 11 to 17 modules a side, with one
finder. On a phone photo it is 30-70 pixels wide: in the fast pass's reduced page a module is
a pixel or two, blurred, and zxing-cpp neither reads nor locates it; the detectors (trained on
QR codes) score it 0.04-0.29, under their threshold; the page's QR codes are read, so it is
done, and the code was never located (benchmark lowres-0016/0049/0087/0098, multi-0016/0043/
0084: `complete` with a code missing). Cropped from the full-size page and enlarged, its one
finder is plain (worker.engine.finders, on the crop: the page-wide search's windows, sized
from the page, blur it into its neighbours) and zxing-cpp reads the code.

Only the detector's places are searched, and only on pages with a code read: a finder search
over a whole photo costs 7-140 ms. A place is searched when the detector scores it FLOOR or
more (under its threshold), it is small enough to be a Micro QR code the fast pass could miss,
and no read code or detector box takes it in (a QR code's corner has a finder too): the first
detector's decoding at a lower floor costs nothing more (one inference), the finder search
about a third of a millisecond a place. A crop with one finder outside every read code is read;
with none or several (pieces of QR codes, text) it is left. zxing-cpp's Micro QR symbols
located there and not read keep the page open (cascade.Findings), as any located symbol does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import zxingcpp

from worker.engine import enhance, finders, rectify, zxing_reader
from worker.engine.cascade import Box, StageContext, bounds, box_centre
from worker.engine.deadline import spend, work_done
from worker.engine.detector.geometry import Detection
from worker.engine.images import Page
from worker.engine.zxing_reader import ReadOptions, Transform

# The least detector score of a place searched. The small model scored the seven benchmark
# codes above 0.038, 0.044, 0.096, 0.22, 0.22, 0.22 and 0.29; a photo has about 4 places from
# 0.09 up that no code or box takes in, 10 from 0.05, 20 from 0.03. A/B over every other
# image of the corpus and qr-photos-val (925, one run, alternating): CPU a scan median 24.2 ->
# 24.9 ms from 0.09, 27.4 from 0.04, where lowres-0098 (0.044) is read as well.
FLOOR = 0.09
# A place whose box is longer than this (page pixels) is no Micro QR code the fast pass
# missed: a 17-module code at 4 pixels a module, boxed with the detector's slack, is about 90.
MAX_BOX_PX = 128.0
# Around a box, a share of its longer side: the detector's box of such a code is loose and
# holds its finder. A wider margin costs more than its pixels (text's nested contours): 0.25
# with SEARCH_FACTOR 1.5 cost 6.1 ms a photo to this one's 3.9.
_BOX_MARGIN = 0.2
# A finder this large against its box is no Micro QR code's (it is 11 to 17 modules, boxed at
# 17-33 modules over the benchmark's seven): a logo's square, a QR code's corner.
_MIN_BOX_MODULES = 11.0
# The finder search sees the crop enlarged by this much: find_finders takes a finder of 2
# pixels a module or more, and these codes are 1.9 and up (multi-0016).
SEARCH_FACTOR = 1.25
# The read sees the code at each of these many pixels a module in turn (at most MAX_FACTOR
# times its size): over the benchmark's blurred codes, 6 read five of six, 8 four (one of them
# not at 6), 5 four and 12 four.
MODULE_PX = (6.0, 8.0)
MAX_FACTOR = 6.0
# From the finder's centre, the crop reaches this many modules every way: the code lies on
# one side of it, up to 13.5 modules past its centre, then 4 modules of quiet zone.
REACH_MODULES = 18.0
# Places searched and work spent a page, in work units (about a millisecond of CPU each,
# worker.engine.deadline.work_done): a page of decoys pays at most this (a search costs about
# 0.3 ms; a finder's reads, deblurred at two sizes, up to 20).
MAX_PLACES = 16
BUDGET_UNITS = 30.0
# Upright or not, the code is found by its finder; its own contrast, not inverted.
OPTIONS = ReadOptions(
    try_downscale=False,
    try_invert=False,
    try_rotate=False,
    formats=(zxingcpp.BarcodeFormat.MicroQRCode,),
)


def _same(gray: np.ndarray) -> np.ndarray:
    return gray


# Blur and shake are what hide these codes: deconvolved, they read (unsharp first, cheapest).
VARIANTS: tuple[tuple[str, Callable[[np.ndarray], np.ndarray | None]], ...] = (
    ("micro", _same),
    ("micro_unsharp", enhance.unsharp),
    ("micro_defocus", enhance.deblur_defocus),
    ("micro_deshake", enhance.deblur_shake),
)


def look(
    ctx: StageContext,
    page: Page,
    faint: Sequence[Detection],
    *,
    stage: str,
    model: str,
) -> None:
    """Search the detector's `faint` places (page pixels, most confident first) for a Micro QR
    code's finder, and read each one found."""
    findings = ctx.findings
    taken = [bounds(code.quad) for code in findings.codes if code.page == page.index]
    taken += findings.detector_boxes.get(page.index, [])
    places = [
        det.box
        for det in faint
        if max(det.box[2] - det.box[0], det.box[3] - det.box[1]) <= MAX_BOX_PX
        and not any(_meets(det.box, other) for other in taken)
    ]
    if not places:
        return
    full, scale = page.gray(ctx.settings.thorough_max_side)
    started = work_done()
    searched: list[Box] = []
    seen: list[tuple[float, float, float]] = []  # finders read: x, y, module (page pixels)
    for box in places:
        if len(searched) >= MAX_PLACES or work_done() - started > BUDGET_UNITS:
            return
        if ctx.deadline.expired():
            return
        # The detector's boxes of one place overlap: its first search took it in.
        if any(_holds(other, box) for other in searched):
            continue
        searched.append(box)
        finder = _one_finder(full, scale, box, taken)
        if finder is None:
            continue
        x, y, _ = finder
        if any(abs(x - sx) < 3 * sm and abs(y - sy) < 3 * sm for sx, sy, sm in seen):
            continue
        seen.append(finder)
        for name, symbols in attempts(full, scale, finder, ctx.deadline.expired):
            ctx.findings.add(
                symbols,
                page=page.index,
                stage=stage,
                decoder=zxing_reader.DECODER,
                variant=name,
                model=model,
            )
            if any(s.valid for s in symbols):
                break


def look_at(full: np.ndarray, box: Box) -> list[zxing_reader.Symbol] | None:
    """The Micro QR codes read at one place `box` of `full` (its pixels, nothing taken), None
    where the gate found no one finder there: what `look` does at a detector's faint place,
    for the false-read benchmark (worker.bench.false_reads --micro), which must show that it
    reads nothing that is not there."""
    finder = _one_finder(full, 1.0, box, ())
    if finder is None:
        return None
    for _name, symbols in attempts(full, 1.0, finder):
        if read := [s for s in symbols if s.valid]:
            return read
    return []


def _meets(a: Box, b: Box) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _holds(outer: Box, box: Box) -> bool:
    """Whether `box`'s centre lies in `outer` (a place searched already takes it in)."""
    x, y = box_centre(box)
    return outer[0] <= x <= outer[2] and outer[1] <= y <= outer[3]


def _one_finder(
    full: np.ndarray, scale: float, box: Box, taken: Sequence[Box]
) -> tuple[float, float, float] | None:
    """The one finder pattern around `box` (page pixels) outside every `taken` box, as its
    centre and module size in page pixels; None where there is none, more than one (pieces
    of a QR code), or one too large for a Micro QR code the box could hold."""
    crop_at = rectify.padded_bounds(full.shape, box, scale, _BOX_MARGIN, 4.0)
    if crop_at is None:
        return None
    left, top, right, bottom = crop_at
    crop = cv2.resize(
        full[top:bottom, left:right],
        None,
        fx=SEARCH_FACTOR,
        fy=SEARCH_FACTOR,
        interpolation=cv2.INTER_LINEAR,
    )
    spend("resize", (bottom - top) * (right - left) + crop.size)
    found = []
    longest = max(box[2] - box[0], box[3] - box[1])
    for finder in finders.find_finders(crop):
        x = (finder.centre[0] / SEARCH_FACTOR + left) / scale
        y = (finder.centre[1] / SEARCH_FACTOR + top) / scale
        if not any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in taken):
            found.append((float(x), float(y), finder.module / SEARCH_FACTOR / scale))
    if len(found) != 1 or found[0][2] * _MIN_BOX_MODULES > longest:
        return None
    return found[0]


def attempts(
    full: np.ndarray,
    scale: float,
    finder: tuple[float, float, float],
    expired: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[str, list[zxing_reader.Symbol]]]:
    """zxing-cpp, Micro QR alone, on the square around a finder (page pixels) enlarged to
    each of MODULE_PX a module, as is and deblurred: each variant's name and what it saw, in
    turn, until `expired` (the caller stops at the first read)."""
    x, y, module = (v * scale for v in finder)
    reach = REACH_MODULES * module
    height, width = full.shape[:2]
    left, top = max(0, int(x - reach)), max(0, int(y - reach))
    right, bottom = min(width, int(x + reach) + 1), min(height, int(y + reach) + 1)
    for pixels in MODULE_PX:
        factor = float(np.clip(pixels / max(module, 1e-6), 1.0, MAX_FACTOR))
        crop = cv2.resize(
            full[top:bottom, left:right], None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC
        )
        spend("resize", (bottom - top) * (right - left) + crop.size)
        transform = Transform(scale * factor, offset_x=left * factor, offset_y=top * factor)
        for name, prepare in VARIANTS:
            if expired():
                return
            image = prepare(crop)
            if image is None:
                continue
            yield name, zxing_reader.read(image, transform, OPTIONS)
