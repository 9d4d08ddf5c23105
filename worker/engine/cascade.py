"""The cascade's moving parts: what a stage is, and the shared state stages write into.

A stage is a small object with a `name`, a relative `cost` (the engine runs cheaper
stages first) and a `run` method that adds what it reads to the scan's `Findings`.
The neural detector joins the cascade as one more such object; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from worker.engine.deadline import Deadline
from worker.engine.images import Document, Page
from worker.engine.qr.decoder import searched
from worker.engine.results import Code, LocatedBy, Quad
from worker.engine.zxing_reader import Symbol
from worker.rules import Want
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.engine.detector.geometry import Detection

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass
class Findings:
    """Codes read so far (one entry per printed symbol), and symbols seen but not yet read.

    A symbol located on a page is read or it keeps the page open (issue 19, "complete means
    complete"): zxing's located-but-unreadable symbols (`valid=False`) and the detectors'
    boxes (each over its model's threshold) that no read code covers are the page's
    `unread` regions; "all" is not satisfied while a page has one, so the next stage gets
    its chance, and a scan that ends with one left says so (ScanResult.unread).
    """

    codes: list[Code] = field(default_factory=list)
    # Located but unread symbols: page, and the quad zxing found (page pixels).
    _pending: list[tuple[int, Quad]] = field(default_factory=list)
    # The best detector score seen on each page a detector ran on (0.0: it found nothing):
    # what later, costlier stages weigh before spending their time on a page.
    detector_scores: dict[int, float] = field(default_factory=dict)
    # Where the detectors saw candidates (x0, y0, x1, y1 in page pixels), when they say.
    detector_boxes: dict[int, list[Box]] = field(default_factory=dict)
    # Pages where the codes read so far may not be all there are: "all" waits for one more
    # stage to look at them (see ask_another_look). Each ask is numbered: a stage that asks
    # again for a page that asked before it ran keeps the page asking after it.
    _looks_asked: dict[int, int] = field(default_factory=dict)
    _asks: int = 0
    # Places the soft decoder has tried (page, quad in page pixels).
    _soft_tried: list[tuple[int, Quad]] = field(default_factory=list)
    # Pages shown to hold no code (a born-digital PDF page whose fast render shows nothing of
    # one, worker.engine.stages.born_digital): done, with or without a code.
    _settled: set[int] = field(default_factory=set)
    # Where the first detector saw something (page pixels), down to its doubt floor: what a
    # later detector's box is checked against (worker.engine.stages.detect).
    first_looks: dict[int, list[Box]] = field(default_factory=dict)
    # Places the first detector scored just under its threshold, where nothing was read or
    # boxed (page pixels): the next detector looks at them before the page is done.
    doubts: dict[int, list[Box]] = field(default_factory=dict)
    # Pages the fast pass saw rendered rather than photographed (mostly paper at full white:
    # a render or a flat scan, stages.fast.rendered): no later stage need look for a
    # photo's steep view there (the zoom).
    rendered_pages: set[int] = field(default_factory=set)
    # Detector boxes ruled out as codes by a cheaper look (page, box): they keep no page open
    # and no later stage reads them, and the result lists them (reason `ruled_out`).
    _ruled_out: list[tuple[int, Box]] = field(default_factory=list)
    # Places the soft decoder found a QR look-alike at (page, quad in page pixels:
    # worker.engine.qr.decoder.NotASymbol): ruled out, and no stage reads there again.
    _not_symbols: list[tuple[int, Quad]] = field(default_factory=list)
    # The first detector's weak boxes (page, detection in page pixels, stage, model) whose
    # late variants wait for the refining detector (worker.engine.stages.detect.WEAK_SCORE).
    _deferred: list[tuple[int, Detection, str, str]] = field(default_factory=list)

    def settle(self, page: int) -> None:
        """`page` holds no code: no later stage looks at it, and "all" is satisfied there."""
        self._settled.add(page)

    def settled(self, page: int) -> bool:
        return page in self._settled

    def dismiss(self, page: int, boxes: Sequence[Box]) -> None:
        """These detector `boxes` on a born-digital page, rendered at 4 pixels a module or
        more, showed nothing of a code (text, a logo): they are no longer located symbols."""
        if boxes and page in self.detector_boxes:
            self.detector_boxes[page] = [b for b in self.detector_boxes[page] if b not in boxes]

    def rule_out(self, page: int, box: Box) -> None:
        """A detector's `box` that a cheaper look showed holds no code: it is not a located
        symbol (it keeps the page open for no stage) but the result still names it."""
        self._ruled_out.append((page, box))

    def not_a_symbol(self, page: int, quad: Quad) -> None:
        """The soft decoder's verdict on the place `quad`: a QR look-alike, no symbol. It is
        ruled out (rule_out), and the same place located again, by zxing or any detector,
        is no located symbol either and is read by no stage (is_not_a_symbol)."""
        if not self.is_not_a_symbol(page, quad):
            self._not_symbols.append((page, quad))
            self.rule_out(page, bounds(quad))

    def defer(self, page: int, detection: Detection, stage: str, model: str) -> None:
        """A weak box's late variants wait for the refining detector's look at `page`."""
        self._deferred.append((page, detection, stage, model))

    def deferred(self, page: int) -> list[tuple[Detection, str, str]]:
        """The weak boxes deferred on `page` (detection, the stage and model that boxed it)."""
        return [(d, stage, model) for p, d, stage, model in self._deferred if p == page]

    def is_not_a_symbol(self, page: int, quad: Quad) -> bool:
        """Whether `quad` is a place the soft decoder found a QR look-alike at: the same place
        (same_place), or one centred on it (zxing-cpp locates parts of a look-alike as
        symbols of their own: rMQR and Micro QR shapes inside it)."""
        return any(
            p == page and (same_place(seen, quad) or _inside(seen, _centre(quad)))
            for p, seen in self._not_symbols
        )

    def ruled_out(self, page: int) -> list[Quad]:
        """The boxes ruled out on `page` that no read code covers, as quads."""
        return [
            box_quad(box)
            for p, box in self._ruled_out
            if p == page and not self.covers(page, box_centre(box))
        ]

    def ask_another_look(self, page: int) -> None:
        """The codes read on `page` may not be all: on a photo, a code the reduced page
        blurred away is often not even located, and the page would count as done. The
        next stage to run looks at the page before "all" is satisfied with it (a page
        that asked is not blind to it: see searched_blind)."""
        self._asks += 1
        self._looks_asked[page] = self._asks

    def looks_asked(self) -> frozenset[tuple[int, int]]:
        """The asks standing now (page, ask), to hand back to looks_taken."""
        return frozenset(self._looks_asked.items())

    def looks_taken(self, asked: frozenset[tuple[int, int]]) -> None:
        """A stage has run since these asks were made (a page asked again since stays)."""
        for page, ask in asked:
            if self._looks_asked.get(page) == ask:
                del self._looks_asked[page]

    def detected(self, page: int, scores: list[float], boxes: Sequence[Box] = ()) -> None:
        """A detector ran on `page` and found candidates with these scores (maybe none),
        at these boxes in page pixels (optional: a detector that gives no boxes still
        tells the later stages whether it saw anything)."""
        self.detector_scores[page] = max([self.detector_scores.get(page, 0.0), *scores])
        self.detector_boxes.setdefault(page, []).extend(boxes)

    def searched_blind(self, page: int) -> bool:
        """A detector looked at `page` and found nothing, and zxing located nothing there
        either: the page most likely holds no code, and a costly blind search of it
        mostly buys latency (pages where no detector ran are not blind: no one looked, nor
        are pages that asked for another look: a detector saw a code there under its
        threshold, worker.engine.stages.detect)."""
        return (
            self.detector_scores.get(page, -1.0) == 0.0
            and page not in self._looks_asked
            and not any(p == page for p, _ in self._pending)
        )

    def regions(self, page: int) -> list[Box]:
        """Where a code is likely but none was read yet: detector boxes and the outlines of
        zxing's located-but-unread symbols on `page` (page pixels), those a read code
        already covers left out; the detectors' order (most confident first) is kept."""
        boxes = list(self.detector_boxes.get(page, ()))
        boxes += [bounds(quad) for p, quad in self._pending if p == page]
        return [
            b
            for b in boxes
            if not self.covers(page, box_centre(b)) and not self.is_not_a_symbol(page, box_quad(b))
        ]

    def add(
        self,
        symbols: list[Symbol],
        *,
        page: int,
        stage: str,
        decoder: str,
        variant: str,
        model: str | None = None,
    ) -> int:
        added = 0
        for symbol in symbols:
            if not symbol.valid:
                self._pending.append((page, symbol.quad))
                continue
            added += self.add_code(
                Code(
                    text=symbol.text,
                    data=symbol.data,
                    format=symbol.format,
                    quad=symbol.quad,
                    page=page,
                    stage=stage,
                    decoder=decoder,
                    variant=variant,
                    model=model,
                    content_type=symbol.content_type,
                    symbology_identifier=symbol.symbology_identifier,
                    ec_level=symbol.ec_level,
                    version=symbol.version,
                )
            )
        return added

    def add_code(self, code: Code) -> bool:
        """One code read (by zxing or our soft decoder); False when it is a re-read."""
        if self._seen(code):
            return False
        self.codes.append(code)
        self._pending = [(p, q) for p, q in self._pending if not self.covers(p, _centre(q))]
        return True

    def first_soft_look(self, page: int, quad: Quad) -> bool:
        """Whether the soft decoder has yet to try this place (then it is marked tried): the
        fast pass, a detector and the thorough pass often hand it the same symbol. The same
        place, not one that overlaps: zxing-cpp's "symbols" made of two codes' finders span
        both, and took the look of each code inside them (qr-photos-val 55_2). And only where
        the earlier look searched all of it: zxing-cpp's corners of a symbol can be well off
        (a finder cut by the page's edge, the far corners placed on the wrong side), and a
        detector's box of it that reaches past them holds what that look never saw."""
        if any(
            p == page and same_place(seen, quad) and _within(quad, searched(seen))
            for p, seen in self._soft_tried
        ):
            return False
        self._soft_tried.append((page, quad))
        return True

    def reaches_past(self, page: int, quad: Quad) -> bool:
        """Whether this place is one the soft decoder has tried, but reaches past all that
        the earlier look searched (see first_soft_look): a second look at a symbol whose
        first corners were well off."""
        return any(
            p == page and same_place(seen, quad) and not _within(quad, searched(seen))
            for p, seen in self._soft_tried
        )

    def soft_looks(self, page: int) -> int:
        return sum(p == page for p, _ in self._soft_tried)

    def _seen(self, new: Code) -> bool:
        # The same content at another place on the page is another printed symbol (posters
        # and forms repeat codes) and is listed; at the same place it is a re-read.
        centre = _centre(new.quad)
        return any(
            code.page == new.page
            and code.format == new.format
            and code.data == new.data
            and _inside(code.quad, centre)
            for code in self.codes
        )

    def unresolved(self) -> int:
        return len(self._pending)

    def unread(self, page: int) -> list[tuple[Quad, LocatedBy]]:
        """The symbols located on `page` that no read code covers: zxing's located ones
        (their quads) first, then the detectors' boxes (as axis-aligned quads), each place
        once: both detectors and zxing often report the same symbol, and zxing reports a
        damaged one several times over (as a QR code and as rMQR or Micro QR shapes
        overlapping it). A position that overlaps a read code is that code seen again
        (zxing's rMQR ghosts span a read code and its neighbour), one with no area
        (zxing's corners all on one point) locates nothing, and one at a place the soft
        decoder found a QR look-alike at (not_a_symbol) is listed as ruled out instead."""
        located: list[tuple[Quad, LocatedBy]] = [
            (q, "zxing") for p, q in self._pending if p == page
        ]
        located += [(box_quad(box), "detector") for box in self.detector_boxes.get(page, ())]
        read = [code.quad for code in self.codes if code.page == page]
        kept: list[tuple[Quad, LocatedBy]] = []
        for quad, by in located:
            if (
                _area(quad) < _MIN_LOCATED_AREA
                or self.covers(page, _centre(quad))
                or self.is_not_a_symbol(page, quad)
            ):
                continue
            if any(_overlap(other, quad) for other in [*read, *(seen for seen, _ in kept)]):
                continue
            kept.append((quad, by))
        return kept

    def page_satisfied(self, page: int, want: Want) -> bool:
        """ "first": any code anywhere; "all": this page has a code, no located symbol left
        unread, and no look asked for that a stage has not yet taken."""
        if want == "first":
            return bool(self.codes)
        if page in self._settled:
            return True
        return self.has_code(page) and page not in self._looks_asked and not self.unread(page)

    def satisfied(self, want: Want, pages: int) -> bool:
        if want == "first":
            return bool(self.codes)
        return all(self.page_satisfied(page, want) for page in range(pages))

    def has_code(self, page: int) -> bool:
        """Whether a code was read on `page`."""
        return any(code.page == page for code in self.codes)

    def covers(self, page: int, point: tuple[float, float]) -> bool:
        """Whether a code already read on `page` lies at `point` (page pixels)."""
        return any(code.page == page and _inside(code.quad, point) for code in self.codes)


def _inside(quad: Quad, point: tuple[float, float]) -> bool:
    contour = np.asarray(quad, np.float32).reshape(-1, 1, 2)
    # A little slack: corners found in different variants differ by a few pixels.
    return cv2.pointPolygonTest(contour, point, True) >= -8.0


def _centre(quad: Quad) -> tuple[float, float]:
    return (sum(p[0] for p in quad) / 4.0, sum(p[1] for p in quad) / 4.0)


# The smallest located position worth a look: a version 1 code at a pixel a module is 441.
_MIN_LOCATED_AREA = 100.0


def _area(quad: Quad) -> float:
    """The quad's area (shoelace), whatever its corners' order."""
    xs, ys = [p[0] for p in quad], [p[1] for p in quad]
    return abs(sum(xs[i] * ys[(i + 1) % 4] - xs[(i + 1) % 4] * ys[i] for i in range(4))) / 2.0


def _overlap(a: Quad, b: Quad) -> bool:
    """Whether the outlines of `a` and `b` share at least a quarter of the smaller one."""
    ax0, ay0, ax1, ay1 = bounds(a)
    bx0, by0, bx1, by1 = bounds(b)
    shared = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return shared > 0.0 and shared >= 0.25 * smaller


def same_place(a: Quad, b: Quad) -> bool:
    """Whether the outlines of `a` and `b` are one place: their bounds' intersection over
    union at least a half (a detector's loose box and zxing's tight quad of one symbol)."""
    ax0, ay0, ax1, ay1 = bounds(a)
    bx0, by0, bx1, by1 = bounds(b)
    shared = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - shared
    return union > 0.0 and shared >= 0.5 * union


# Joined boxes (joined): the union's longer side at most this many times its shorter one. A
# symbol seen steeply is boxed wider than tall (qr-photos-val 60_0's two halves: 1.8); two
# codes side by side on a line of a form, each boxed, join into a strip that is not one.
JOINED_MAX_RATIO = 2.0


def joined(boxes: Sequence[Box]) -> list[Box]:
    """The unions of two boxes that overlap (_overlap) without being one place (same_place)
    and together look like one symbol (an upright box within JOINED_MAX_RATIO): a large
    symbol in strong perspective that the detectors box in parts, none of them holding its
    three finders (qr-photos-val 60_0: four boxes, each with at most two). In the order of
    the pairs (the detectors' most confident first), each union once."""
    out: list[Box] = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            qa, qb = box_quad(a), box_quad(b)
            if same_place(qa, qb) or not _overlap(qa, qb):
                continue
            union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
            width, height = union[2] - union[0], union[3] - union[1]
            if max(width, height) <= JOINED_MAX_RATIO * min(width, height) and union not in out:
                out.append(union)
    return out


# A place reaches past an earlier look only by more than this share of its larger side: a
# thinner strip holds a module row or two, not a finder the look missed (half a finder of a
# version 10 symbol is 6% of its side). Over the corpus and qr-photos-val, half the places
# that reached past at all did so by less, at the cost of a second look each.
_REACH_SLACK = 0.05


def _within(quad: Quad, box: Box) -> bool:
    """Whether `quad` lies inside `box` but for _REACH_SLACK, the page's top and left edges
    taken as a box's edges there (nothing lies beyond them to be missed)."""
    x0, y0, x1, y1 = bounds(quad)
    slack = _REACH_SLACK * max(x1 - x0, y1 - y0)
    return (
        max(x0, 0.0) + slack >= box[0]
        and max(y0, 0.0) + slack >= box[1]
        and x1 - slack <= box[2]
        and y1 - slack <= box[3]
    )


def box_centre(box: Box) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


def box_quad(box: Box) -> Quad:
    x0, y0, x1, y1 = box
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def bounds(quad: Quad) -> Box:
    """The upright box (x0, y0, x1, y1) around `quad`."""
    xs, ys = [p[0] for p in quad], [p[1] for p in quad]
    return (min(xs), min(ys), max(xs), max(ys))


@dataclass
class StageContext:
    document: Document
    settings: Settings
    deadline: Deadline
    want: Want
    findings: Findings
    # For a stage that refines an earlier detector's look (the medium model after the small
    # one): pages that look found blank, with nothing located by zxing either, are left out.
    skip_blind_pages: bool = False

    def page_done(self, page: int) -> bool:
        """True when a stage should leave this page: it is satisfied, or time is up."""
        return self.deadline.expired() or self.findings.page_satisfied(page, self.want)

    def pages_to_scan(self) -> Iterator[Page]:
        """The pages still needing work, in order; stops at the deadline."""
        for page in self.document.pages:
            if self.deadline.expired() or self.findings.satisfied(
                self.want, len(self.document.pages)
            ):
                return
            if self.findings.page_satisfied(page.index, self.want) or self.findings.settled(
                page.index
            ):
                continue
            if self.skip_blind_pages and self.findings.searched_blind(page.index):
                continue
            yield page


class Stage(Protocol):
    name: str
    cost: float

    def run(self, ctx: StageContext) -> None:
        """Read what it can of `ctx.pages_to_scan()` into `ctx.findings`, leaving a page
        as soon as `ctx.page_done(page)`."""
        ...
