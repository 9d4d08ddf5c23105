"""The soft decoder on the outlines fitted to a located place (worker.engine.outline), for
the detector stages' boxes and the thorough pass's regions alike.

A glare spot, a stain or a tear over one finder pattern leaves the soft decoder no finder
triple, and a detector's corners (or zxing's partial ones) are too far off for its outline
path (issue 19); the two finders that survive give an outline it can read from. Each stage
gives these reads a budget of its own per page, so that a page of decoys or of unreadable
codes pays a bounded time for them.
"""

from __future__ import annotations

import numpy as np

from worker.engine import outline
from worker.engine.cascade import Box, StageContext
from worker.engine.deadline import work_done
from worker.engine.images import Page
from worker.engine.results import Quad
from worker.engine.stages import soft

# The variant its reads are recorded under (Code.variant).
VARIANT = "fitted_outline"
JOINED_VARIANT = "joined_outline"
# Per page and stage, in work units (about a millisecond of CPU each,
# worker.engine.deadline.work_done): the finder search and fit cost about 10 a place, a
# decode up to DECODE_BUDGET_UNITS.
BUDGET_UNITS = 100.0
# The decoder's limit on an outline, in work units: with no finder triple it searches for one
# first, then reads the outline (9-54 ms of CPU, median 13, for the benchmark's glare and
# damaged codes it read; soft.BUDGET_UNITS cut most of them off).
DECODE_BUDGET_UNITS = 60.0


class Budget:
    """The outline reads' work on one page in one stage."""

    def __init__(self) -> None:
        self.spent = 0.0  # work units

    def left(self) -> bool:
        return self.spent < BUDGET_UNITS


def read(
    ctx: StageContext,
    page: Page,
    gray: np.ndarray,
    scale: float,
    box: Box,
    budget: Budget,
    *,
    stage: str,
    model: str | None = None,
    joined: bool = False,
) -> bool:
    """The soft decoder on the outline fitted in `box` (page pixels) of `gray` (the page at
    `scale`); True when it read. The work is taken from `budget`: a place is started while
    the budget lasts and then finished (one fit, one decode of at most DECODE_BUDGET_UNITS),
    so no place is left half done. `joined`: `box` is detector boxes joined into one
    (cascade.joined), a whole symbol where each box held part of it: a single finder traced
    there also gets the outlines its ring and the symbol's far corner allow
    (outline.outlines' one_finder), recorded as JOINED_VARIANT."""
    started = work_done()
    try:
        if not budget.left():
            return False
        scaled = (box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale)
        for found in outline.outlines(gray, scaled, one_finder=joined):
            if ctx.deadline.expired():
                return False
            corners: Quad = tuple((float(x / scale), float(y / scale)) for x, y in found.corners)  # type: ignore[assignment]
            # The place was tried before, by the detector's or zxing's corners.
            if soft.read(
                ctx,
                page,
                corners,
                stage=stage,
                variant=JOINED_VARIANT if joined else VARIANT,
                model=model,
                again=True,
                budget_units=DECODE_BUDGET_UNITS,
            ):
                return True
        return False
    finally:
        budget.spent += work_done() - started
