"""Our soft-decision decoder (worker.engine.qr) on what zxing-cpp located or a detector boxed
but could not read, before the costly late variants.

zxing-cpp decides every module dark or light before Reed-Solomon, so a codeword it is unsure
of costs a full error; ours averages each module's area, keeps a confidence, and corrects the
least confident codewords as erasures (half an error each). Every stage hands it the same
kinds of places: zxing's located-but-undecoded symbols, and detector quads. It reads from the
thorough-size page, so a symbol located on the reduced page gets every pixel kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.engine import qr
from worker.engine.cascade import StageContext
from worker.engine.images import Page
from worker.engine.results import Code, Quad
from worker.engine.zxing_reader import Symbol, Transform

DECODER = "qrw-soft"
# A symbol it reads costs a few ms; one it cannot read costs its whole search, which this
# bounds (the decoder gives up at it and returns None).
BUDGET_MS = 30.0
# On a page of decoys every box is a search that fails: past this many places a page, the
# rest go without (the late zxing variants still try them).
MAX_LOOKS_PER_PAGE = 8


def read(
    ctx: StageContext,
    page: Page,
    quad: Quad,
    *,
    stage: str,
    variant: str,
    model: str | None = None,
    again: bool = False,
    budget_ms: float = BUDGET_MS,
) -> bool:
    """Try the soft decoder on one located place (page pixels); True when it added a code.
    `again`: a place already tried, with a better outline (worker.engine.outline) than the
    first look had; `budget_ms`: the decoder's time limit there."""
    findings = ctx.findings
    if (
        ctx.page_done(page.index)
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
    soft = qr.decode(gray, region, budget_ms=min(budget_ms, ctx.deadline.remaining_ms()))
    if soft is None:
        return False
    return findings.add_code(
        Code(
            text=soft.text,
            data=soft.data,
            format="QRCode",
            quad=tuple(transform.to_page(x, y) for x, y in soft.quad),  # type: ignore[arg-type]
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
