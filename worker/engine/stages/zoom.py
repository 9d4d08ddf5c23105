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

It runs after the thorough pass, on pages that pass read nothing on, so no page another
stage completes pays for it: one small-model inference a page (bounded by ZOOM_MAX_SIDE)
and the reads within a CPU budget a page (worker.engine.deadline.work_clock).
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.engine import qr, rectify, zxing_reader
from worker.engine.cascade import Box, StageContext
from worker.engine.deadline import work_clock
from worker.engine.detector.detector import Detector
from worker.engine.images import Page
from worker.engine.stages import born_digital, soft
from worker.engine.zxing_reader import ReadOptions, Transform

VARIANT = "zoom"
# The detector sees the page at this share of its pixels a side, once reduced to at most
# ZOOM_MAX_SIDE (a 12 MP photo is seen at less than its full resolution rather than at four
# times the cost). At 0.5 it boxed the same unread perspective codes, at a third more CPU.
SEEN_AT = 0.4
ZOOM_MAX_SIDE = 1792
# Boxes read per page, most confident first, and their CPU time per page: an outline, two
# refinements and a decode cost 20-60 ms a box. Every perspective code it read was its first
# box; a page of decoys (the `none` photos) pays for each box it reads.
MAX_PLACES = 2
BUDGET_S = 0.15
# The decoder's limit on one outline (it reads one it can read in 10-40 ms).
DECODE_BUDGET_MS = 60.0
# The view's pixels per pixel of the code's longest side (within rectify's MIN_SIDE and
# MAX_SIDE): a version-10 code 1.5 pixels a module on the near side is about 9 in the view.
VIEW_FACTOR = 6.0
# zxing-cpp on the view: upright, dark on light (the outline is a dark blob's), at the
# resolution it was made for.
VIEW_OPTIONS = ReadOptions(try_downscale=False, try_invert=False, try_rotate=False)
# The view's margin around the refined outline, as a share of its size: the quiet zone.
VIEW_MARGIN = 0.15
# Outline refinements, until no corner moves SETTLED_PX: each view is straighter than the
# last, so a hull edge the first took from a neighbour's blob (a corner several modules off)
# is the code's own in the next; one code of the benchmark's needed three.
REFINEMENTS = 4
SETTLED_PX = 0.5


class ZoomStage:
    name = "zoom"
    # After the thorough pass (10): only the pages every other stage left open.
    cost = 11.0

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def run(self, ctx: StageContext) -> None:
        for page in ctx.pages_to_scan():
            if born_digital.is_born_digital(page) or ctx.findings.has_code(page.index):
                # Vector codes are read from renders of their regions (born_digital), at any
                # resolution they need: a photo's perspective is not theirs. A page with a
                # code read is mostly open for a decoy box left unread (a logo, a barcode):
                # on 20 of the 100 perspective photos the zoom read decoys there, 60-200 ms
                # a page, and no code.
                continue
            self._page(ctx, page)

    def _page(self, ctx: StageContext, page: Page) -> None:
        # The thorough pass's image (cached by now): a JPEG asked for at ZOOM_MAX_SIDE
        # comes DCT-scaled to half when it is a little larger, and the reads need every pixel.
        gray, scale = page.gray(ctx.settings.thorough_max_side)
        boxes = self._boxes(gray)
        # Each box over the threshold is a located symbol, as any detector's is: one the
        # zoom does not read (or has no time left for) keeps the page from being complete
        # and is named in the result's unread (a code boxed here and dropped was a silent
        # miss). A box over a code read here is covered by it.
        ctx.findings.detected(
            page.index,
            [],
            [(x0 / scale, y0 / scale, x1 / scale, y1 / scale) for x0, y0, x1, y1 in boxes],
        )
        started = work_clock()
        for box in boxes[:MAX_PLACES]:
            if ctx.page_done(page.index) or work_clock() - started > BUDGET_S:
                return
            centre = ((box[0] + box[2]) / 2.0 / scale, (box[1] + box[3]) / 2.0 / scale)
            # One read makes it a page with a code (see run).
            if not ctx.findings.covers(page.index, centre) and self._read(
                ctx, page, gray, scale, box
            ):
                return

    def _boxes(self, gray: np.ndarray) -> list[Box]:
        """The detector's boxes over `gray` seen at SEEN_AT (of at most ZOOM_MAX_SIDE), in
        `gray`'s pixels, most confident first. One inference over the whole page: the
        network is convolutional and takes any size its deepest stride divides (padded to
        it), a third cheaper than the same pixels in overlapping tiles of its input size,
        and it boxed 23 of the 32 unread perspective codes to the tiles' 25, every one it
        then read among them."""
        factor = SEEN_AT * min(1.0, ZOOM_MAX_SIDE / max(gray.shape))
        seen = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        found = self.detector.detect_seen(seen, factor)
        return [det.box for det in found]

    def _read(
        self, ctx: StageContext, page: Page, gray: np.ndarray, scale: float, box: Box
    ) -> bool:
        crop, mapping = rectify.box_crop(gray, box, 1.0)
        corners = rectify.outline(crop)
        if corners is None:
            return False
        quad = np.array([mapping.to_page(float(x), float(y)) for x, y in corners], np.float32)
        for refinement in range(REFINEMENTS):
            refined = rectify.refine_outline(gray, quad)
            if refined is None:
                if refinement == 0:
                    return False
                break
            moved = float(np.abs(refined - quad).max())
            quad = refined
            if moved < SETTLED_PX:
                break
        corners_page = tuple((float(x / scale), float(y / scale)) for x, y in quad)
        if not soft.is_place(corners_page):  # type: ignore[arg-type]
            return False
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
        # The soft decoder reads the refined outline from the page itself, not from the view:
        # the view's bicubic enlargement spreads each squeezed module over its neighbours
        # (and rings), where the page's own pixels give the equaliser (grid.equalise) the blur
        # it measures. Over the boxes the zoom outlined on the benchmark's perspective photos
        # (132, two a page) the page read 82 and the view 73, all but one of the view's among
        # them (at DECODE_BUDGET_MS, the last few vary from run to run).
        found = qr.decode(
            gray,
            tuple((float(x), float(y)) for x, y in quad),  # type: ignore[arg-type]
            budget_ms=DECODE_BUDGET_MS,
            deadline_ms=ctx.deadline.remaining_ms(),
        )
        if found is None:
            return False
        return soft.add(
            ctx,
            page,
            found,
            Transform(scale).to_page,
            stage=self.name,
            variant=VARIANT,
            model=label,
        )
