"""Which places the soft stage (worker/engine/stages/soft.py) takes a look at.

Each place on a page gets one look by our decoder (the fast pass, the detectors and the
thorough pass often hand it the same symbol), and a page gets a few looks at most. zxing-cpp
also reports "located" symbols with no position, and on a page of two codes symbols whose
corners come from both: a quadrilateral across the page. Such a quad is no place: were it
looked at, it would take the look of every real place inside its bounds.
"""

from __future__ import annotations

import cv2
import numpy as np
import segno

from worker.bench.false_reads import render
from worker.engine.cascade import Findings, StageContext, same_place
from worker.engine.deadline import Deadline
from worker.engine.images import document_from_array
from worker.engine.qr.decoder import searched
from worker.engine.stages import soft
from worker.rules import Want
from worker.settings import Settings

PAYLOAD = "https://pay.example.com/inv/2026-000123"


def _page_with_one_code() -> tuple[np.ndarray, tuple[tuple[float, float], ...]]:
    """A 640 x 640 page with one symbol at (400..550, 250..400), and a detector's box
    around it."""
    symbol = segno.make_qr(PAYLOAD, error="m")
    code = render(np.array(symbol.matrix, dtype=bool), 4, border=0)
    code = code[: min(150, code.shape[0]), : min(150, code.shape[1])]
    page = np.full((640, 640), 255, dtype=np.uint8)
    h, w = code.shape
    page[250 : 250 + h, 400 : 400 + w] = code
    box = ((390.0, 240.0), (410.0 + w, 240.0), (410.0 + w, 260.0 + h), (390.0, 260.0 + h))
    return page, box


def _context(page: np.ndarray) -> StageContext:
    settings = Settings.from_env({})
    document = document_from_array(page, settings)
    return StageContext(document, settings, Deadline(10_000), Want.ALL, Findings())


def test_a_quad_across_the_page_does_not_take_the_look_of_a_code_inside_its_bounds() -> None:
    """The quad zxing-cpp made of two codes' finders spans the page (sides 530 and 30 px):
    its bounds cover the real code's box, whose decode then never ran."""
    page, box = _page_with_one_code()
    ctx = _context(page)
    across = ((30.0, 260.0), (560.0, 262.0), (560.0, 290.0), (30.0, 288.0))
    assert not soft.read(ctx, ctx.document.pages[0], across, stage="fast", variant="full+soft")
    # A generous budget: this is about which places are looked at, not how fast.
    assert soft.read(
        ctx, ctx.document.pages[0], box, stage="detect_small", variant="soft", budget_units=2000
    )
    assert [code.text for code in ctx.findings.codes] == [PAYLOAD]


def test_a_look_at_an_overlapping_place_leaves_the_code_its_own_look() -> None:
    """zxing-cpp's quad made of the finders of several codes can be a plausible shape and
    still be no code's outline: it overlaps the real code's box by a third and is not the
    same place, so the box gets its own look (before, any overlap of a quarter of the
    smaller outline counted as the same place: qr-photos-val 55_2 was never decoded).
    Whether that look reads the code is the decoder's affair (its search margin holds the
    whole symbol here, and since two finders may give the third, it does)."""
    page, box = _page_with_one_code()
    ctx = _context(page)
    elsewhere = ((180.0, 150.0), (470.0, 160.0), (460.0, 330.0), (190.0, 320.0))
    assert soft.is_place(elsewhere)
    soft.read(ctx, ctx.document.pages[0], elsewhere, stage="fast", variant="full+soft")
    assert ctx.findings.first_soft_look(0, box)
    # The same place again (zxing's tight quad after the detector's box) is not looked at.
    assert not ctx.findings.first_soft_look(
        0, ((400.0, 250.0), (516.0, 250.0), (516.0, 366.0), (400.0, 366.0))
    )


def test_a_symbol_with_no_position_is_no_place_and_costs_no_look() -> None:
    page, box = _page_with_one_code()
    ctx = _context(page)
    nowhere = ((0.0, 0.0),) * 4
    point = ((439.0, 228.0),) * 4
    for _ in range(soft.MAX_LOOKS_PER_PAGE + 1):
        assert not soft.read(ctx, ctx.document.pages[0], nowhere, stage="fast", variant="x")
        assert not soft.read(ctx, ctx.document.pages[0], point, stage="fast", variant="x")
    assert ctx.findings.soft_looks(0) == 0
    assert soft.read(
        ctx, ctx.document.pages[0], box, stage="detect_small", variant="soft", budget_units=2000
    )


def test_what_counts_as_a_place() -> None:
    square = ((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0))
    assert soft.is_place(square)
    assert soft.is_place(square[::-1])  # either winding: zxing's mirrored symbols
    assert soft.is_place(((10.0, 0.0), (90.0, 5.0), (100.0, 60.0), (0.0, 50.0)))  # perspective
    assert not soft.is_place(((0.0, 0.0), (100.0, 100.0), (100.0, 0.0), (0.0, 100.0)))  # crossed
    assert not soft.is_place(((0.0, 0.0), (5.0, 0.0), (5.0, 5.0), (0.0, 5.0)))  # too small
    assert not soft.is_place(((0.0, 0.0), (400.0, 0.0), (400.0, 100.0), (0.0, 100.0)))  # 4:1


def _page_with_a_code_cut_by_the_edge() -> tuple[np.ndarray, np.ndarray]:
    """A 640 x 640 page with a version 3 symbol (4 px a module) turned 32 degrees, its
    bottom-left corner 15 px past the page's left edge: that finder is cut in half. Its
    corners (top-left, top-right, bottom-right, bottom-left) in page pixels."""
    code = render(np.array(segno.make_qr(PAYLOAD, error="m").matrix, dtype=bool), 4, border=0)
    n = code.shape[0]
    c, s = np.cos(np.radians(32.0)), np.sin(np.radians(32.0))
    square = np.array([[0, 0], [n, 0], [n, n], [0, n]], dtype=np.float64)
    turn = np.array([[c, -s], [s, c]])
    turned = square @ turn.T
    shift = np.array([-15.0, 250.0]) - turned.min(axis=0)
    page = cv2.warpAffine(
        code, np.hstack([turn, shift[:, None]]), (640, 640), flags=cv2.INTER_AREA, borderValue=255
    )
    return page, turned + shift


def test_a_box_reaching_past_all_a_first_look_searched_gets_a_look_of_its_own() -> None:
    """zxing-cpp located a symbol whose bottom-left finder the page's edge cuts, and placed
    its far corners on the wrong side (qr-photos-val 9_0: top-left and top-right right, the
    other two 38 degrees off). The soft decoder's look there searched its margin around
    those corners and never saw the cut finder. The detector's box of the symbol is the same
    place by overlap (IoU over a half), but it reaches 20 px further left: it gets a look of
    its own, and that look reads the symbol (two finders place the third)."""
    page, (tl, tr, _, bl) = _page_with_a_code_cut_by_the_edge()
    ctx = _context(page)
    turn = np.radians(-38.0)
    down = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) @ (bl - tl)
    first = tuple((float(x), float(y)) for x, y in (tl, tr, tr + down, tl + down))
    assert not soft.read(ctx, ctx.document.pages[0], first, stage="fast", variant="x+soft")
    box = ((0.0, 246.0), (149.0, 246.0), (149.0, 414.0), (0.0, 414.0))
    assert same_place(first, box)
    assert soft.read(
        ctx, ctx.document.pages[0], box, stage="detect_small", variant="soft", budget_units=2000
    )
    assert [code.text for code in ctx.findings.codes] == [PAYLOAD]
    # A box inside what the first look searched is the same place, looked at once; so is
    # one reaching past it by a strip too thin to hold a finder it missed (4 px of 168).
    inside = ((50.0, 250.0), (150.0, 250.0), (150.0, 410.0), (50.0, 410.0))
    assert not ctx.findings.first_soft_look(0, inside)
    x0, _, x1, y1 = searched(first)
    sliver = ((x0 + 10.0, y1 - 168.0), (x1, y1 - 168.0), (x1 + 4.0, y1), (x0 + 10.0, y1))
    assert same_place(first, sliver)
    assert not ctx.findings.first_soft_look(0, sliver)
