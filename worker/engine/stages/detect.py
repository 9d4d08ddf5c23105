"""The detector stages: find codes the classical passes could not locate, rectify each
one to an upright square, and decode the crop at several enhancements.

The small model runs on the reduced page the fast pass already decoded; the medium
one (more pixels, more capacity) only when the small one left the page unread, or scored
a place just under its threshold (a doubt: the medium model looks at that place alone
first, and at the whole page only where it boxes it); a box the small one scores weakly
(WEAK_SCORE) gets its costliest reads there too, and only where the medium one boxes the
place as well. Crops are cut from the full-resolution page, so a code that was a few
pixels per module in the reduced image gets all the pixels the camera recorded. A medium
box the small model's look rules out (page-sized, where it boxed nothing) is listed, not
read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import zxingcpp

from worker.engine import enhance, finders, qr, rectify, zxing_reader
from worker.engine.cascade import Box, StageContext, box_centre, box_quad, joined, same_place
from worker.engine.deadline import work_done
from worker.engine.detector.detector import Detector
from worker.engine.detector.geometry import Detection
from worker.engine.images import Page
from worker.engine.results import Quad
from worker.engine.stages import born_digital, micro, outlined, soft
from worker.engine.zxing_reader import ReadOptions

_BINARY = ReadOptions(binarizer=zxingcpp.Binarizer.FixedThreshold, try_downscale=False)
_GLOBAL = ReadOptions(binarizer=zxingcpp.Binarizer.GlobalHistogram)
# The late variants see an upright crop that the earlier ones already tried inverted and
# downscaled: the extra passes read nothing more there (measured) and cost a seventh.
_LATE = ReadOptions(try_downscale=False, try_invert=False, try_rotate=False)


@dataclass(frozen=True, slots=True)
class CropVariant:
    name: str
    # None: this cut finds nothing to cut (no outline in the box), and is skipped.
    cut: Callable[[np.ndarray, Detection, float], tuple[np.ndarray, rectify.Perspective] | None]
    # None: the enhancement does not apply to this crop (no shake to undo), and the
    # decode it would feed is skipped; a list: several candidate images, tried in turn.
    prepare: Callable[[np.ndarray], np.ndarray | list[np.ndarray] | None]
    options: ReadOptions = zxing_reader.FAST


def _quad(gray: np.ndarray, det: Detection, scale: float) -> tuple[np.ndarray, rectify.Perspective]:
    return rectify.rectify(gray, det.quad * scale, scale)


def _box(gray: np.ndarray, det: Detection, scale: float) -> tuple[np.ndarray, rectify.Perspective]:
    return rectify.box_crop(gray, tuple(v * scale for v in det.box), scale)  # type: ignore[arg-type]


def _outlined(
    gray: np.ndarray, det: Detection, scale: float
) -> tuple[np.ndarray, rectify.Perspective] | None:
    return rectify.outlined(gray, tuple(v * scale for v in det.box), scale)  # type: ignore[arg-type]


def _same(gray: np.ndarray) -> np.ndarray:
    return gray


def _light_defocus(gray: np.ndarray) -> np.ndarray:
    return enhance.deblur_defocus(gray, sigma=1.5)


# Most often useful first; a detection stops at its first read.
VARIANTS = (
    CropVariant("rectified", _quad, _same),
    CropVariant("box", _box, _same),
    CropVariant("rectified_unsharp", _quad, enhance.unsharp),
    CropVariant("rectified_threshold", _quad, enhance.local_threshold, _BINARY),
    CropVariant("rectified_clahe", _quad, enhance.clahe, _GLOBAL),
    CropVariant("box_denoise", _box, enhance.denoise, _GLOBAL),
    # Camera shake smears modules into each other along one direction: no threshold
    # separates them, but the smear is a known kind of blur that deconvolution undoes.
    CropVariant("rectified_deshake", _quad, enhance.deblur_shake, _LATE),
    CropVariant("box_deshake", _box, enhance.deblur_shake, _LATE),
    # Lens softness beyond what the unsharp mask recovers: deconvolve a Gaussian, wide
    # first (most soft photos), then narrow (dense codes, whose modules a wide kernel
    # rings over).
    CropVariant("rectified_defocus", _quad, enhance.deblur_defocus, _LATE),
    CropVariant("rectified_defocus_light", _quad, _light_defocus, _LATE),
    # A torn corner or a glare spot over a finder pattern hides the symbol from zxing's
    # locator; two surviving finders say where to redraw the third.
    CropVariant("rectified_finder", _quad, finders.restore_finder, _LATE),
    # Steep views: the detector's corners are off, the code's own outline is not.
    CropVariant("outlined", _outlined, _same, _LATE),
    CropVariant("outlined_deshake", _outlined, enhance.deblur_shake, _LATE),
    # Not the outlined crop deconvolved (`outlined_defocus`): over the benchmark corpus and
    # qr-photos-val (1,850 images, 2026-12-07) it was the first to read no code, without it
    # the same codes were read, and it cost 1,960 of the cascade's 81,300 work units, 1,610
    # of them on the 261 images over 150 ms of CPU (a Wiener filter of a crop, then zxing).
    CropVariant("outlined_finder", _outlined, finders.restore_finder, _LATE),
    # Glare halos: CLAHE flattens them, and zxing's local binarizer (not the global one
    # the earlier CLAHE variant uses) follows what contrast is left at their rim.
    CropVariant("rectified_clahe_local", _quad, enhance.clahe, _LATE),
)


class DetectorStage:
    def __init__(
        self,
        detector: Detector,
        cost: float,
        born_digital_rules: bool = True,
        doubts: bool = True,
    ) -> None:
        self.detector = detector
        self.name = f"detect_{detector.size}"
        self.cost = cost
        # Born-digital PDF pages: the boxes are recorded, and the thorough pass reads them
        # from renders of their regions at 4 pixels a module or more (a vector code is sharp
        # at any resolution) rather than from crops of a whole-page render; a refining
        # detector leaves them alone. False treats them as any page.
        self.born_digital_rules = born_digital_rules
        # Whether its doubted places send a page on (DetectorStage._doubt): only where a
        # refining detector comes next, which looks at them alone; the thorough pass would
        # search the whole page for them.
        self.doubts = doubts

    def run(self, ctx: StageContext) -> None:
        for page in ctx.pages_to_scan():
            rules = self.born_digital_rules and born_digital.is_born_digital(page)
            if rules and (ctx.skip_blind_pages or born_digital.finish(ctx, page)):
                # A born-digital page is read first from what its clean fast render shows
                # (finder patterns, code texture, zxing's symbols): settled or read there, it
                # needs no inference (a model trained on photos, 7-20 ms a page).
                continue
            if ctx.skip_blind_pages and not self._worth_a_look(ctx, page):
                continue
            self._page(ctx, page, boxes_only=rules)

    def _worth_a_look(self, ctx: StageContext, page: Page) -> bool:
        """Whether a refining detector looks at `page`: one left open by a located symbol, or
        one whose doubted places (the first detector's, just under its threshold) this model
        boxes over its threshold, looked at alone (a few ms each, where the whole page would
        cost 60-90). A page with a code read, left open by the first detector's weak boxes
        alone (WEAK_SCORE), is such a page too, its weak boxes looked at as doubts are: the
        whole page gets the look where this model boxes one of them."""
        doubts = ctx.findings.doubts.get(page.index, [])
        unread = ctx.findings.unread(page.index)
        weak = _weak_only(ctx, page.index, unread)
        if unread and weak is None:
            return True
        places = doubts + (weak or [])
        if not places:
            return True
        reduced, scale = page.gray(ctx.settings.fast_max_side)
        for x0, y0, x1, y1 in places:
            margin = DOUBT_MARGIN * max(x1 - x0, y1 - y0)
            region = ((x0 - margin) * scale, (y0 - margin) * scale)
            region += ((x1 + margin) * scale, (y1 + margin) * scale)
            doubt = box_quad((x0 * scale, y0 * scale, x1 * scale, y1 * scale))
            if any(
                same_place(doubt, box_quad(found.box))
                for found in self.detector.detect_region(reduced, region)  # type: ignore[arg-type]
            ):
                return True
        return False

    def _page(self, ctx: StageContext, page: Page, *, boxes_only: bool = False) -> None:
        reduced, reduced_scale = page.gray(ctx.settings.fast_max_side)
        # The first detector's faint places, down to micro.FLOOR, are searched for Micro QR
        # codes on photo pages (worker.engine.stages.micro): the same inference, decoded
        # lower. The places from DOUBT_FLOOR up are what they were.
        micro_look = not boxes_only and not ctx.skip_blind_pages and ctx.want == "all"
        floor = micro.FLOOR if micro_look else DOUBT_FLOOR
        # Best first: the late variants' budget goes to the likeliest codes.
        seen = sorted(self.detector.detect(reduced, floor), key=lambda d: -d.score)
        found = [d for d in seen if d.score >= DOUBT_FLOOR]
        detections = [d for d in found if d.score >= self.detector.threshold]
        # Detections are in reduced-page pixels; crops are cut from the larger image.
        in_page = [_scaled(detection, 1.0 / reduced_scale) for detection in detections]
        doubts = [
            _scaled(d, 1.0 / reduced_scale) for d in found if d.score < self.detector.threshold
        ]
        # Where an earlier detector stage boxed a code, it tried that place's outline.
        outlined_before = list(ctx.findings.detector_boxes.get(page.index, ()))
        if ctx.skip_blind_pages:
            in_page = self._ruled_out(ctx, page, in_page)
            detections = in_page
        else:
            ctx.findings.first_looks[page.index] = [d.box for d in in_page]
        ctx.findings.detected(page.index, [d.score for d in detections], [d.box for d in in_page])
        if boxes_only:
            return
        if detections:
            full, full_scale = page.gray(ctx.settings.thorough_max_side)
            late = _LateBudget(outlined_before)
            for detection in in_page:
                # Every detection is a code of its own: with want="all", one read does not
                # make the page done (invoices carry two codes, forms more).
                if ctx.deadline.expired() or (ctx.want == "first" and ctx.findings.codes):
                    return
                if self._already_read(ctx, page.index, detection):
                    continue
                if not self._defers(ctx, detection):
                    self._read(ctx, page, full, full_scale, detection, late)
                    continue
                self._read(ctx, page, full, full_scale, detection, late, part="early")
                if not self._already_read(ctx, page.index, detection):
                    ctx.findings.defer(page.index, detection, self.name, self.detector.label)
            self._joined(ctx, page, full, full_scale, in_page)
            if ctx.skip_blind_pages:
                self._deferred(ctx, page, full, full_scale, in_page)
        if micro_look and ctx.findings.has_code(page.index):
            # Before the doubts: a Micro QR code read at a doubted place is no doubt.
            faint = [
                _scaled(d, 1.0 / reduced_scale) for d in seen if d.score < self.detector.threshold
            ]
            micro.look(ctx, page, faint, stage=self.name, model=self.detector.label)
        if self.doubts and not ctx.skip_blind_pages and ctx.want == "all":
            self._doubt(ctx, page, doubts, in_page)

    def _ruled_out(
        self, ctx: StageContext, page: Page, detections: list[Detection]
    ) -> list[Detection]:
        """A refining detector's boxes, but for those the first detector's look rules out: a
        box of RULED_OUT_SHARE of the page or more where it boxed nothing over its threshold
        at the same place. It boxes every code that large (over the benchmark corpus and
        qr-photos-val, each code of a tenth of its page or more scored 0.4 or more); the
        medium model, on noisy JPEG pages, boxes half the page at 0.7-0.95 (no read in 55
        such boxes, 100-300 ms of CPU each), where the small one scores half the page 0.2-0.25
        at most. Kept: the result lists them (reason `ruled_out`)."""
        first = ctx.findings.first_looks.get(page.index)
        if first is None:
            return detections
        largest = page.width * page.height * RULED_OUT_SHARE
        kept = []
        for det in detections:
            quad = box_quad(det.box)
            if _area(det.box) >= largest and not any(
                same_place(quad, box_quad(box)) for box in first
            ):
                ctx.findings.rule_out(page.index, det.box)
            else:
                kept.append(det)
        return kept

    def _doubt(
        self, ctx: StageContext, page: Page, doubts: list[Detection], boxed: list[Detection]
    ) -> None:
        """A place the first detector scores just under its threshold, where nothing was
        read or boxed, sends the page to the next stage's look (the larger model's): on a
        page whose other codes were read it would count as done, the code never located
        (qr-photos-val 69_1: 0.24 here, 0.39 by the medium model). Not a place of
        RULED_OUT_SHARE of the page or more: it scores every code that large 0.4 or more
        (see _ruled_out), and noisy JPEG photos half their page 0.2-0.25."""
        largest = page.width * page.height * RULED_OUT_SHARE
        doubted = [
            doubt.box
            for doubt in doubts
            if _area(doubt.box) < largest
            and not self._already_read(ctx, page.index, doubt)
            and not any(same_place(box_quad(doubt.box), box_quad(other.box)) for other in boxed)
        ]
        if doubted:
            ctx.findings.doubts[page.index] = doubted
            ctx.findings.ask_another_look(page.index)

    def _joined(
        self,
        ctx: StageContext,
        page: Page,
        full: np.ndarray,
        scale: float,
        detections: list[Detection],
    ) -> None:
        """The outline of a symbol the detections box in parts (cascade.joined), read from
        their union once none of them read: each box's own search holds at most two of its
        finders (qr-photos-val 60_0). A budget of its own (outlined.Budget) a page, so that
        what the boxes themselves read costs what it did."""
        unread = [d.box for d in detections if not self._already_read(ctx, page.index, d)]
        budget = outlined.Budget()
        for box in joined(unread):
            if ctx.page_done(page.index) or (ctx.want == "first" and ctx.findings.codes):
                return
            if ctx.findings.covers(page.index, box_centre(box)):
                continue
            if outlined.read(
                ctx,
                page,
                full,
                scale,
                box,
                budget,
                stage=self.name,
                model=self.detector.label,
                joined=True,
            ):
                return

    def _defers(self, ctx: StageContext, detection: Detection) -> bool:
        """Whether this detection's late variants wait for the refining detector's look
        (WEAK_SCORE): a first detector's weak box, where a refining one comes next."""
        return self.doubts and not ctx.skip_blind_pages and detection.score < WEAK_SCORE

    def _deferred(
        self,
        ctx: StageContext,
        page: Page,
        full: np.ndarray,
        scale: float,
        boxed: list[Detection],
    ) -> None:
        """The late variants of the first detector's weak boxes on `page` that this model
        boxes too (same_place), still unread after its own reads: read from the first
        detector's box, as it would have (each model's crop of a code reads where the other's
        may not: glare-0021). A weak box this model does not box stays located and unread."""
        late = _LateBudget([])
        for detection, stage, model in ctx.findings.deferred(page.index):
            if ctx.page_done(page.index):
                return
            if self._already_read(ctx, page.index, detection) or not any(
                same_place(box_quad(detection.box), box_quad(other.box)) for other in boxed
            ):
                continue
            self._read(
                ctx, page, full, scale, detection, late, part="late", stage=stage, model=model
            )

    def _already_read(self, ctx: StageContext, page: int, detection: Detection) -> bool:
        return ctx.findings.covers(page, box_centre(detection.box))

    def _read(
        self,
        ctx: StageContext,
        page: Page,
        full: np.ndarray,
        scale: float,
        det: Detection,
        late: _LateBudget,
        *,
        part: Part = "all",
        stage: str | None = None,
        model: str | None = None,
    ) -> None:
        """Read one detection with VARIANTS in turn, the soft decoder and the outline read
        before the late ones: all of them, the `early` ones (up to the late zxing variants),
        or the `late` ones alone (a weak box's, in the refining detector's stage: _deferred,
        labelled with the `stage` and `model` that boxed it)."""
        name = stage or self.name
        label = model or self.detector.label
        quad: Quad = tuple((float(x), float(y)) for x, y in det.quad)  # type: ignore[assignment]
        # Variants share their cuts: each warp is done once per detection.
        cuts: dict[object, tuple[np.ndarray, rectify.Perspective] | None] = {}
        softly = part == "late"
        for variant in VARIANTS:
            if part == "late" and variant.options is not _LATE:
                continue
            # A place the soft decoder found a QR look-alike at (cascade.Findings.not_a_symbol),
            # this stage's look or an earlier one's, is read no further.
            if ctx.deadline.expired() or ctx.findings.is_not_a_symbol(page.index, quad):
                return
            if variant.options is _LATE and not softly:
                # The soft decoder before the late variants: it reads in a few ms most of
                # what they would, and what none of them can (issue 19).
                softly = True
                if soft.read(ctx, page, quad, stage=name, variant="soft", model=label):
                    return
                # Two finders that survive a glare spot or a stain over the third give an
                # outline the decoder reads from where the detector's corners are too far off.
                box = (float(det.box[0]), float(det.box[1]), float(det.box[2]), float(det.box[3]))
                if not late.outlined_before(box) and outlined.read(
                    ctx, page, full, scale, box, late.outlines, stage=name, model=label
                ):
                    return
            if variant.options is _LATE and (part == "early" or late.spent()):
                return
            if variant.cut not in cuts:
                cuts[variant.cut] = variant.cut(full, det, scale)
            cut = cuts[variant.cut]
            if cut is None:
                continue
            crop, mapping = cut
            prepared = variant.prepare(crop)
            for image in [] if prepared is None else _as_list(prepared):
                symbols = zxing_reader.read(image, mapping, variant.options)
                added = ctx.findings.add(
                    symbols,
                    page=page.index,
                    stage=name,
                    decoder=zxing_reader.DECODER,
                    variant=variant.name,
                    model=label,
                )
                if added or any(s.valid for s in symbols):
                    return
                if soft.read_located(
                    ctx, page, symbols, stage=name, variant=variant.name, model=label
                ):
                    return
                if variant.name in SOFT_AFTER and _soft_whole(
                    ctx, page, image, mapping, stage=name, variant=variant.name, model=label
                ):
                    return


# Which of a detection's reads DetectorStage._read makes.
Part = Literal["all", "early", "late"]

# A first detector's box scored under this gets the early variants, the soft decoder and
# the outline read in its stage; its late variants wait for the refining detector's look
# (the unread box keeps the page open for it), and run only where that model boxes the
# place too (DetectorStage._deferred). Over the benchmark corpus and qr-photos-val
# (2026-12-07, main at 9cd1322), the small model's boxes under 0.5 that the medium model did
# not box at the same place (183) read 8 codes, one by a late variant, and spent 9.1 s of
# CPU on the 175 that read nothing (52 ms each), most of it in the late variants: text
# columns, stamps and logos it scores just over its threshold. worker.bench.ab at 0.4 and
# 0.5 against the tree before: the same codes and one more (lowres-0010), CPU -3.9% and a
# further -2.1%.
WEAK_SCORE = 0.5

# Places the first detector scores from this up to its threshold are not read, but they
# send the page to the next stage (DetectorStage._doubt): over qr-photos-val and the
# benchmark corpus, the codes the small model scored under 0.3 that the medium model boxes
# (at 0.3 or more) scored 0.2 or more.
DOUBT_FLOOR = 0.2
# Around a doubted place, the share of its longer side the refining detector sees on each
# side of it (its context: without it, a model scores most places higher than in the page).
DOUBT_MARGIN = 0.5


# A refining detector's box this share of the page or larger, where the first detector saw
# nothing, is ruled out (DetectorStage._ruled_out).
RULED_OUT_SHARE = 0.15


# The late variants cost tens of milliseconds per unread detection; a page of decoys (a
# page with no code, where the detector fires on logos and barcodes) or of noise would pay
# it for each. Past this much work per page and stage, in work units (about a millisecond of
# CPU each, worker.engine.deadline.work_done), the rest of its detections get the early
# variants only.
LATE_BUDGET_UNITS = 120.0


class _LateBudget:
    def __init__(self, outlined_before: list[Box]) -> None:
        self.started = work_done()
        # The outline reads have a budget of their own (worker.engine.stages.outlined), kept
        # out of this one: a detection they cannot read must not take the late variants'
        # time (they read other damaged codes, e.g. with a redrawn finder).
        self.outlines = outlined.Budget()
        self._outlined_before = outlined_before

    def outlined_before(self, box: Box) -> bool:
        """Whether an earlier detector stage's box holds this one's centre (and so tried
        its outline: the medium model mostly boxes what the small one did)."""
        x, y = box_centre(box)
        return any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in self._outlined_before)

    def spent(self) -> bool:
        spent = work_done() - self.started - self.outlines.spent
        return spent > LATE_BUDGET_UNITS


# The deblurred crops the soft decoder also reads whole where zxing-cpp read nothing in
# them: a shaken or defocused code keeps too little of its finders' shape for zxing's locator
# and for the decoder's own search in the blurred crop, and deconvolved it gives them back.
# Over the multi and lowres photos the decoder read 23 of the 37 QR codes the cascade left
# unread from upright boxes around them so deblurred, none from the boxes as they were. The
# narrow defocus is left out: 8 reads over the corpus, 14 ms on each decoy of a `none` photo.
SOFT_AFTER = frozenset({"rectified_deshake", "box_deshake", "rectified_defocus"})
# The decoder's limit on one such crop, in work units: it read them in 4-21 ms of CPU, and
# gave up on a decoy's in 8-14.
SOFT_AFTER_BUDGET_UNITS = 25.0


def _soft_whole(
    ctx: StageContext,
    page: Page,
    image: np.ndarray,
    mapping: rectify.Perspective,
    *,
    stage: str,
    variant: str,
    model: str,
) -> bool:
    """The soft decoder over the whole of a prepared crop (the symbol is somewhere in it);
    True when it added a code. Its work is the late variants' (LATE_BUDGET_UNITS)."""
    height, width = image.shape[:2]
    whole = box_quad((0.0, 0.0, float(width), float(height)))
    found = qr.decode(
        image,
        whole,
        budget_units=SOFT_AFTER_BUDGET_UNITS,
        deadline_ms=ctx.deadline.remaining_ms(),
    )
    if found is None:
        return False
    return soft.add(
        ctx, page, found, mapping.to_page, stage=stage, variant=f"{variant}+soft", model=model
    )


def _weak_only(
    ctx: StageContext, page: int, unread: Sequence[tuple[Quad, str]]
) -> list[Box] | None:
    """The first detector's weak boxes on `page` (page pixels) when the page has a code read
    and they are all that keeps it open (each unread place one of them), else None. Over the
    benchmark corpus and qr-photos-val (2026-12-07, 9fc53f9), on the 114 such pages the
    refining detector's look at the whole page read 5 codes, each at a weak box's place, for
    5.3 s of CPU (its inference, 37 ms a page, and its boxes' reads)."""
    if not unread or not ctx.findings.has_code(page):
        return None
    weak = [
        detection.box
        for detection, _, _ in ctx.findings.deferred(page)
        if not ctx.findings.covers(page, box_centre(detection.box))
    ]
    if all(
        by == "detector" and any(same_place(quad, box_quad(box)) for box in weak)
        for quad, by in unread
    ):
        return weak
    return None


def _as_list(prepared: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    return prepared if isinstance(prepared, list) else [prepared]


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _scaled(det: Detection, factor: float) -> Detection:
    return Detection(det.score, tuple(v * factor for v in det.box), det.quad * factor)  # type: ignore[arg-type]
