"""The last look at a photo every other stage left without a code: the small detector over
the page at more pixels than it first saw, and each box read from a view rectified on the
code's own edges (issue 19, the `perspective` category).

Seen at a steep angle, a code's far side spans a module or less a pixel. The detectors see
the page reduced to their input (a 1700-pixel photo at a quarter, or at 0.38 for the medium
model): such a code is a sliver they score under their threshold, and where they do box it
their corners are ten and more modules off. Over the page at 0.4 of its pixels the small
model boxes most of them; the box's dark blob outlined (worker.engine.rectify.outline) and
moved onto its hull's straight edges (rectify.refine_outline) is within half a module at
the corners: zxing-cpp reads a view warped from it at several pixels a module (bicubic),
and the soft decoder the outline from the page's own pixels. On the benchmark's 100
perspective photos this read 9 or 10 of the 32 codes the cascade left unread, none lost (the
commit that added it has the runs).

It runs after the thorough pass, on photos that pass read nothing on, so no page another
stage completes pays for it: one small-model inference a page (bounded by ZOOM_MAX_SIDE)
and the reads within a work budget a page (worker.engine.deadline.work_done).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from worker.engine import enhance, qr, rectify, zxing_reader
from worker.engine.cascade import Box, StageContext, box_quad, same_place
from worker.engine.deadline import work_done
from worker.engine.detector.detector import Detector
from worker.engine.images import Page
from worker.engine.stages import born_digital, soft
from worker.engine.zxing_reader import ReadOptions, Transform

VARIANT = "zoom"
ToPage = Callable[[float, float], tuple[float, float]]
# The detector sees the page at each of these shares of its pixels a side, once reduced to at
# most ZOOM_MAX_SIDE (a 12 MP photo is seen at less than its full resolution rather than at
# four times the cost). Its score of a sliver of a code is erratic from one scale to the next
# (0.24 at 0.4 and 0.34 at 0.5, 0.27 and 0.44, 0.15 and 0.32 for three benchmark codes the
# decoder reads from their outline), and at 0.5 alone it lost one that 0.4 boxes well: both,
# one place's boxes kept together (_places). The second look is most of the zoom's cost on a
# page with no code (benchmark `none`, both trees at once: 221 -> 260 ms of CPU a page mean,
# p95 458 -> 494; its inference and the decoys it boxes); (0.4,) alone reads 82 of the 100
# perspective codes, both 85.
SEEN_AT = (0.4, 0.5)
# A faded print (benchmark `low_contrast`, 4% of the page's contrast kept) is a grey ghost the
# detector scores under 0.2 at any scale, where the page round it (text, a photo's edges) is
# at full contrast, so no page-wide statistic tells it apart: the look at this share is also
# taken contrast-equalised (enhance.clahe), which boxed the two such codes nothing located
# (low_contrast-0027 and -0097, 0.36 and 0.35, each a page that said `complete` with a code on
# it). Only where the plain looks boxed nothing: taken on every page the zoom looks at, the
# equalised look boxed JPEG noise and shadows as codes (noisy_jpeg +90 ms a page, median) and
# its boxes took a read place from a perspective code (perspective-0028 lost).
FADED_AT = 0.4
ZOOM_MAX_SIDE = 1792
# Boxes read per page, most confident first, and their work per page in work units (about a
# millisecond of CPU each, worker.engine.deadline.work_done): an outline, two refinements and
# a decode cost 20-60 ms a box. Every perspective code it read was its first box; a page of
# decoys (the `none` photos) pays for each box it reads.
MAX_PLACES = 2
BUDGET_UNITS = 150.0
# The decoder's limit on one outline, in work units (it reads one it can read in 10-40 ms).
DECODE_BUDGET_UNITS = 60.0
# The view's pixels per pixel of the code's longest side (within rectify's MIN_SIDE and
# MAX_SIDE): a version-10 code 1.5 pixels a module on the near side is about 9 in the view.
VIEW_FACTOR = 6.0
# zxing-cpp on the view: upright, dark on light (the outline is a dark blob's), at the
# resolution it was made for.
VIEW_OPTIONS = ReadOptions(try_downscale=False, try_invert=False, try_rotate=False)
# The view's margin around the refined outline, as a share of its size: the quiet zone.
VIEW_MARGIN = 0.15
# A box off the code (the detector's box of a steep code takes in the text beside it) has its
# centre outside the code's blob: the nearest blob within this share of the crop's side is
# taken for the code's (rectify.outline). Benchmark perspective photo 85: 3% of the side off.
OUTLINE_REACH = 0.1
# Outline refinements, until no corner moves SETTLED_PX: each view is straighter than the
# last, so a hull edge the first took from a neighbour's blob (a corner several modules off)
# is the code's own in the next; one code of the benchmark's needed three.
REFINEMENTS = 4
SETTLED_PX = 0.5
# An outline more than this many times the area of the detector's box it was found in is not
# the code's own: its blob took in what lies round the code (the refinements follow a hull
# out onto the table round a sheet, a shadow, the sheet itself on a dark page). Over the
# benchmark corpus and qr-photos-val (1,850 images, 2026-12-07) the zoom outlined 153 places:
# the 36 it read were at 0.38-1.4 times their box but one (14.5, low_contrast 91, read by the
# decoder from the page's pixels, which it still searches), and 58 of the 117 it did not read
# at 2.2-14.8, 20-380 ms of CPU each (9.8 s in all), much of it the view (a warp of up to
# MAX_SIDE pixels a side, zxing-cpp and the decoder on it) of that blob, in which a code is a
# small, wrongly rectified part.
OWN_OUTLINE_SHARE = 2.0


class ZoomStage:
    name = "zoom"
    # After the thorough pass (10): only the pages every other stage left open.
    cost = 11.0

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def run(self, ctx: StageContext) -> None:
        for page in ctx.pages_to_scan():
            if (
                born_digital.is_born_digital(page)
                or page.index in ctx.findings.rendered_pages
                or ctx.findings.has_code(page.index)
            ):
                # Vector codes are read from renders of their regions (born_digital), at any
                # resolution they need: a photo's perspective is not theirs, nor a rendered
                # raster page's (an e-invoice image, a flat scan): on the benchmark's 253
                # rendered pages the zoom read no code, and cost each `none` one 100 ms of
                # CPU (2026-12-07). A page with a code read is mostly open for a decoy box
                # left unread (a logo, a barcode): on 20 of the 100 perspective photos the
                # zoom read decoys there, 60-200 ms a page, and no code.
                continue
            self._page(ctx, page)

    def _page(self, ctx: StageContext, page: Page) -> None:
        # The thorough pass's image (cached by now): a JPEG asked for at ZOOM_MAX_SIDE
        # comes DCT-scaled to half when it is a little larger, and the reads need every pixel.
        gray, scale = page.gray(ctx.settings.thorough_max_side)
        places = self._places(gray)
        # Each box over the threshold is a located symbol, as any detector's is: one the
        # zoom does not read (or has no time left for) keeps the page from being complete
        # and is named in the result's unread (a code boxed here and dropped was a silent
        # miss). A box over a code read here is covered by it. A place is named once, by its
        # most confident box.
        ctx.findings.detected(
            page.index,
            [],
            [(x0 / scale, y0 / scale, x1 / scale, y1 / scale) for (x0, y0, x1, y1), *_ in places],
        )
        started = work_done()
        for place in places[:MAX_PLACES]:
            box = place[0]
            if ctx.page_done(page.index) or work_done() - started > BUDGET_UNITS:
                return
            centre = ((box[0] + box[2]) / 2.0 / scale, (box[1] + box[3]) / 2.0 / scale)
            # A place the soft decoder found a QR look-alike at (cascade.Findings.not_a_symbol)
            # is not read again.
            seen = box_quad((box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale))
            if ctx.findings.is_not_a_symbol(page.index, seen):
                continue
            # One read makes it a page with a code (see run).
            if not ctx.findings.covers(page.index, centre) and self._read(
                ctx, page, gray, scale, place
            ):
                return

    def _places(self, gray: np.ndarray) -> list[list[Box]]:
        """The detector's boxes over `gray` seen at each of SEEN_AT (of at most
        ZOOM_MAX_SIDE), in `gray`'s pixels, grouped by place (cascade.same_place), the most
        confident place first and each place's boxes most confident first. One inference over
        the whole page a scale: the network is convolutional and takes any size its deepest
        stride divides (padded to it), a third cheaper than the same pixels in overlapping
        tiles of its input size, and at 0.4 it boxed 23 of the 32 unread perspective codes to
        the tiles' 25, every one it then read among them."""
        found = []
        looks: dict[float, tuple[np.ndarray, float]] = {}
        for share in SEEN_AT:
            factor = share * min(1.0, ZOOM_MAX_SIDE / max(gray.shape))
            seen = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            looks[share] = (seen, factor)
            found += self.detector.detect_seen(seen, factor)
        if not found:
            # Nothing boxed at any scale: the page may hold a faded print (FADED_AT).
            seen, factor = looks[FADED_AT]
            found = self.detector.detect_seen(enhance.clahe(seen), factor)
        # The look at 0.5 is the largest input any stage gives the network (up to 896 pixels
        # a side), and ONNX Runtime's arena would keep its activations after the scan (62 MB
        # over the process's baseline after a 60 MP page, where tests/test_engine_memory.py
        # allows 48): given back now, a millisecond on a page that took 100 ms and more.
        self.detector.release()
        places: list[list[Box]] = []
        for det in sorted(found, key=lambda d: -d.score):
            place = next((p for p in places if same_place(box_quad(p[0]), box_quad(det.box))), None)
            if place is None:
                places.append([det.box])
            else:
                place.append(det.box)
        return places

    def _read(
        self, ctx: StageContext, page: Page, gray: np.ndarray, scale: float, place: list[Box]
    ) -> bool:
        # One scale's box of a place can be off the code where another's is not (a blob
        # outline needs the box's centre on the code, or within OUTLINE_REACH of it).
        outlined = next(
            ((q, box) for q, box in ((_outline(gray, box), box) for box in place) if q is not None),
            None,
        )
        if outlined is None:
            return False
        quad, box = outlined
        corners_page = tuple((float(x / scale), float(y / scale)) for x, y in quad)
        if not soft.is_place(corners_page):  # type: ignore[arg-type]
            return False
        page_look = (gray, tuple((float(x), float(y)) for x, y in quad), Transform(scale).to_page)
        if not own_outline(quad, box):
            # The outline walked out of the box onto a larger dark blob (the table round a
            # sheet of paper, a shadow, the sheet itself on a dark page): the view would
            # rectify that blob, not the code, at up to MAX_SIDE pixels a side. The page's
            # pixels within the outline are still searched for the code's finders.
            return self._decode(ctx, page, (page_look,))
        longest = float(np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1).max())
        side = int(np.clip(longest * VIEW_FACTOR, rectify.MIN_SIDE, rectify.MAX_SIDE))
        view, to_page = rectify.rectify(gray, quad, scale, side=side, margin=VIEW_MARGIN)
        label = self.detector.label
        symbols = zxing_reader.read(view, to_page, VIEW_OPTIONS)
        added = ctx.findings.add(
            symbols,
            page=page.index,
            stage=self.name,
            decoder=zxing_reader.DECODER,
            variant=VARIANT,
            model=label,
        )
        if added or any(s.valid for s in symbols):
            return True
        # The soft decoder on the refined outline in the page's own pixels first, then on the
        # view. Seen steeply, a far side of a pixel a module reads from the page: the view's
        # bicubic enlargement spreads each squeezed module over its neighbours (and rings),
        # where the page gives the equaliser (grid.equalise) the blur it measures. A bent
        # page's code reads from the view: its edges are no straight outline, and the decoder
        # finds the finders of the enlarged, upright code itself. Over the boxes the zoom
        # outlined (two a page, benchmark seed 0): perspective 132 boxes, the page read 82,
        # the view 73, either 83; curved 123: 79, 84, 86; damaged 116: 70, 58, 72.
        low = side * VIEW_MARGIN / (1.0 + 2.0 * VIEW_MARGIN)
        high = side - low
        view_look = (view, ((low, low), (high, low), (high, high), (low, high)), to_page.to_page)
        return self._decode(ctx, page, (page_look, view_look))

    def _decode(
        self,
        ctx: StageContext,
        page: Page,
        looks: tuple[tuple[np.ndarray, tuple[tuple[float, float], ...], ToPage], ...],
    ) -> bool:
        """The soft decoder on each (image, outline, back to the page) in turn, to a read."""
        label = self.detector.label
        for image, outline, back in looks:
            found = qr.decode(
                image,
                outline,  # type: ignore[arg-type]
                budget_units=DECODE_BUDGET_UNITS,
                deadline_ms=ctx.deadline.remaining_ms(),
            )
            if found is not None:
                return soft.add(
                    ctx, page, found, back, stage=self.name, variant=VARIANT, model=label
                )
        return False


def own_outline(quad: np.ndarray, box: Box) -> bool:
    """Whether `quad` (an outline found in `box`, both in the same pixels) can be the code's
    own: at most OWN_OUTLINE_SHARE times the box's area."""
    area = abs(float(cv2.contourArea(np.asarray(quad, np.float32).reshape(-1, 1, 2))))
    return area <= OWN_OUTLINE_SHARE * (box[2] - box[0]) * (box[3] - box[1])


def _outline(gray: np.ndarray, box: Box) -> np.ndarray | None:
    """The code's outline in `box` (`gray` pixels), on its own edges, or None."""
    crop, mapping = rectify.box_crop(gray, box, 1.0)
    corners = rectify.outline(crop, OUTLINE_REACH)
    if corners is None:
        return None
    quad = np.array([mapping.to_page(float(x), float(y)) for x, y in corners], np.float32)
    for refinement in range(REFINEMENTS):
        refined = rectify.refine_outline(gray, quad)
        if refined is None:
            if refinement == 0:
                return None
            break
        moved = float(np.abs(refined - quad).max())
        quad = refined
        if moved < SETTLED_PX:
            break
    return quad
