"""Our soft-decision decoder (worker.engine.qr) on what zxing-cpp located or a detector boxed
but could not read, before the costly late variants.

zxing-cpp decides every module dark or light before Reed-Solomon, so a codeword it is unsure
of costs a full error; ours averages each module's area, keeps a confidence, and corrects the
least confident codewords as erasures (half an error each). Every stage hands it the same
kinds of places: zxing's located-but-undecoded symbols, and detector quads. It reads from the
thorough-size page, so a symbol located on the reduced page gets every pixel kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from worker.engine import qr
from worker.engine.cascade import StageContext
from worker.engine.images import Page
from worker.engine.results import Code, Quad
from worker.engine.zxing_reader import Symbol, Transform

DECODER = "qrw-soft"
# A symbol it reads costs a few ms; one it cannot read costs its whole search, which this
# bounds (the decoder gives up at it and returns None). In work units (about a millisecond of
# CPU each, worker.engine.deadline.work_done); the scan's deadline bounds it on the clock too.
BUDGET_UNITS = 30.0
# On a page of decoys every box is a search that fails: past this many places a page, the
# rest go without (the late zxing variants still try them).
MAX_LOOKS_PER_PAGE = 8
# A second look at a symbol, from a detector's box that reaches past all that a first look
# at zxing-cpp's corners searched (a finder cut by the page's edge, the far corners placed on
# the wrong side): its finders then seldom make a triple, and the search goes on to place a
# third from two, past BUDGET_UNITS (qr-photos-val 9_0: 47 ms). Over the benchmark corpus and
# qr-photos-val (1850 images) 30 places got a second look (cascade._REACH_SLACK), 7 read (6
# of them within 30 ms), 0.83 s of CPU in all, 0.08 s of it on the 100 pages with no code.
SECOND_LOOK_BUDGET_UNITS = 60.0  # work units
# A place is a convex quadrilateral whose sides are at least this long (page pixels) and
# within this ratio of each other (the decoder takes no outline beyond it either).
MIN_SIDE_PX = 8.0
MAX_SIDE_RATIO = 3.0


def read(
    ctx: StageContext,
    page: Page,
    quad: Quad,
    *,
    stage: str,
    variant: str,
    model: str | None = None,
    again: bool = False,
    budget_units: float = BUDGET_UNITS,
) -> bool:
    """Try the soft decoder on one located place (page pixels); True when it added a code.
    `again`: a place already tried, with a better outline (worker.engine.outline) than the
    first look had; `budget_units`: the decoder's limit there, in work units."""
    findings = ctx.findings
    if not is_place(quad):
        # zxing-cpp reports located symbols with no position (four equal corners) and, on a
        # page of two codes, "symbols" whose corners come from both (a quadrilateral across
        # the page). Tried, such a quad took the page's look at every place inside its
        # bounds (Findings.first_soft_look compares bounds), so the detector's box of a real
        # code there was never decoded; and it took one of the page's few looks.
        return False
    if findings.reaches_past(page.index, quad):
        budget_units = max(budget_units, SECOND_LOOK_BUDGET_UNITS)
    if (
        ctx.page_done(page.index)
        or findings.is_not_a_symbol(page.index, quad)
        or findings.soft_looks(page.index) >= MAX_LOOKS_PER_PAGE
        or not (findings.first_soft_look(page.index, quad) or again)
    ):
        return False
    # A born-digital PDF page is rendered around the place alone, at 4 pixels a module or
    # more (worker.engine.stages.born_digital); any other page gives its thorough-size image.
    # Imported here: the born-digital stage reads its region renders through this module,
    # so a load-time import either way would be a cycle.
    from worker.engine.stages import born_digital

    rendered = None
    if born_digital.is_born_digital(page):
        xs, ys = [p[0] for p in quad], [p[1] for p in quad]
        rendered = born_digital.render_region(page, (min(xs), min(ys), max(xs), max(ys)))
    if rendered is not None:
        gray, transform, _ = rendered
    else:
        gray, scale = page.gray(ctx.settings.thorough_max_side)
        transform = Transform(scale)
    factor, dx, dy = transform.scale, transform.offset_x, transform.offset_y
    region: Quad = tuple((x * factor - dx, y * factor - dy) for x, y in quad)  # type: ignore[assignment]
    soft = qr.examine(
        gray, region, budget_units=budget_units, deadline_ms=ctx.deadline.remaining_ms()
    )
    if isinstance(soft, qr.NotASymbol):
        # A QR look-alike: no stage reads this place again, and it keeps no page open.
        findings.not_a_symbol(page.index, quad)
        return False
    if soft is None:
        return False
    return add(ctx, page, soft, transform.to_page, stage=stage, variant=variant, model=model)


def add(
    ctx: StageContext,
    page: Page,
    soft: qr.SoftRead,
    to_page: Callable[[float, float], tuple[float, float]],
    *,
    stage: str,
    variant: str,
    model: str | None = None,
) -> bool:
    """Record what the decoder read in an image `to_page` maps onto `page`; False when it
    is a re-read."""
    return ctx.findings.add_code(
        Code(
            text=soft.text,
            data=soft.data,
            format="QRCode",
            quad=tuple(to_page(x, y) for x, y in soft.quad),  # type: ignore[arg-type]
            page=page.index,
            stage=stage,
            decoder=DECODER,
            variant=variant,
            model=model,
            content_type=soft.content_type,
            symbology_identifier=soft.symbology_identifier,
            ec_level=soft.ec_level,
            version=soft.version,
            errors_corrected=soft.errors,
            erasures=soft.erasures,
        )
    )


def is_place(quad: Quad) -> bool:
    """Whether `quad` can outline one symbol: four corners in order around a convex
    quadrilateral, no side shorter than MIN_SIDE_PX nor MAX_SIDE_RATIO times another."""
    if len(quad) != 4:
        return False
    sides = []
    turns = []
    for i in range(4):
        (ax, ay), (bx, by), (cx, cy) = quad[i], quad[(i + 1) % 4], quad[(i + 2) % 4]
        sides.append(math.hypot(bx - ax, by - ay))
        turns.append((bx - ax) * (cy - by) - (by - ay) * (cx - bx))
    if not all(math.isfinite(v) for v in sides + turns) or min(sides) < MIN_SIDE_PX:
        return False
    convex = all(t > 0 for t in turns) or all(t < 0 for t in turns)
    return convex and max(sides) <= MAX_SIDE_RATIO * min(sides)


def read_located(
    ctx: StageContext,
    page: Page,
    symbols: Sequence[Symbol],
    *,
    stage: str,
    variant: str,
    model: str | None = None,
) -> int:
    """The soft decoder on each QR code zxing located in `symbols` and could not read (and
    no read code covers); how many it read. Micro QR and rMQR it does not decode."""
    added = 0
    for symbol in symbols:
        if symbol.valid or symbol.format != "QRCode":
            continue
        centre = (sum(p[0] for p in symbol.quad) / 4.0, sum(p[1] for p in symbol.quad) / 4.0)
        if ctx.findings.covers(page.index, centre):
            continue
        added += read(ctx, page, symbol.quad, stage=stage, variant=f"{variant}+soft", model=model)
    return added
