"""Complete means complete (issue 19, point 7).

A page is `complete` only when every symbol located on it (zxing-cpp's located-but-undecoded
symbols, the detectors' boxes over their threshold) has been read; until then the cascade goes
on, and a scan that ends with one left lists it in `unread` with why. The finding that opened
the issue comes first: on a clean digital page the fast pass read a small code, never saw the
dense payment code beside it, and called the page complete.
"""

from __future__ import annotations

import time

import jsonschema
import numpy as np
import pytest
import segno

from models.synth import digital_invoice
from models.synth.corpus import corpus_sample
from worker.engine import Engine, evidence, zxing_reader
from worker.engine.cascade import Findings, StageContext
from worker.engine.images import open_document
from worker.engine.results import Quad
from worker.engine.stages import FastStage, ThoroughStage
from worker.engine.zxing_reader import Symbol
from worker.http.openapi import DETECT_RESPONSE
from worker.settings import Settings

CLASSICAL = Settings(backend="none")


@pytest.fixture(scope="module")
def neural() -> Engine:
    return Engine(Settings(backend="onnx"))


@pytest.fixture(scope="module")
def classical() -> Engine:
    return Engine(CLASSICAL)


# The finding: a dense code beside a small one on a digital page --------------------------------

# A 300 DPI PNG: a QR-bill payment code (version 13, 4 px a module) and a version 8 code at
# 8 px a module. The fast pass reduces the page to a quarter: the dense code is a module a
# pixel there.
DENSE_PAGE = ("multi_digital", 0)


def test_the_reduced_page_alone_reads_the_small_code_and_does_not_even_locate_the_dense_one():
    sample = corpus_sample(*DENSE_PAGE)
    _, small = sample.codes
    page = open_document(sample.data, CLASSICAL).pages[0]
    reduced, scale = page.gray(CLASSICAL.fast_max_side)
    assert scale == 0.25
    symbols = zxing_reader.read(reduced, zxing_reader.Transform(scale))
    assert [(s.valid, s.data) for s in symbols] == [(True, small.payload)]


@pytest.mark.parametrize("engine_name", ["neural", "classical"])
def test_the_dense_code_is_read_by_the_fast_stage_at_full_size(engine_name, request):
    engine: Engine = request.getfixturevalue(engine_name)
    sample = corpus_sample(*DENSE_PAGE)
    result = engine.scan(sample.data)
    assert {code.data for code in result.codes} == {code.payload for code in sample.codes}
    assert result.stages_run == ["fast"]
    assert result.complete and result.unread == []
    dense = next(code for code in result.codes if code.data == sample.codes[0].payload)
    assert (dense.stage, dense.variant) == ("fast", "full_region")
    # Its corners come back in the page's pixels, where the truth has them.
    assert np.abs(np.array(dense.quad) - np.array(sample.codes[0].quad)).max() < 4.0


def test_every_code_of_forty_multi_digital_pages_is_read(neural: Engine) -> None:
    lost = []
    for index in range(40):
        sample = corpus_sample("multi_digital", index)
        result = neural.scan(sample.data)
        missing = {code.payload for code in sample.codes} - {code.data for code in result.codes}
        if missing:
            lost.append((sample.name, result.complete))
    assert lost == []


def test_the_texture_evidence_marks_the_dense_code_and_no_text() -> None:
    sample = corpus_sample(*DENSE_PAGE)
    reduced, scale = open_document(sample.data, CLASSICAL).pages[0].gray(CLASSICAL.fast_max_side)
    boxes = evidence.dense_squares(reduced)
    centres = [np.array(code.quad).mean(axis=0) * scale for code in sample.codes]
    assert all(any(_contains(box, c) for box in boxes) for c in centres)
    # On ordinary digital invoices every block it marks is a code: a full-size look is
    # paid only where one may be.
    for seed in range(1000, 1012):
        invoice = digital_invoice(seed, fmt="png")
        gray, factor = open_document(invoice.data, CLASSICAL).pages[0].gray(CLASSICAL.fast_max_side)
        codes = [np.array(code.quad) * factor for code in invoice.codes]
        for box in evidence.dense_squares(gray):
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            assert any(_contains(_bounds(quad), centre) for quad in codes), (seed, box)


def _contains(box: tuple[float, ...], point) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _bounds(quad: np.ndarray) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = quad.min(axis=0), quad.max(axis=0)
    return (float(x0), float(y0), float(x1), float(y1))


# A located symbol that nothing reads --------------------------------------------------------


def _symbol(payload: bytes, module: int, *, scramble: float = 0.0) -> np.ndarray:
    """A QR code drawn dark on white; `scramble` flips that share of its data modules,
    leaving the finders, timing and format information whole, so zxing locates it and
    Reed-Solomon cannot repair it."""
    matrix = np.array(segno.make_qr(payload, error="l", mask=0).matrix, np.uint8)
    if scramble:
        rng = np.random.default_rng(3)
        kept = np.zeros(matrix.shape, bool)
        kept[:9, :9] = kept[:9, -9:] = kept[-9:, :9] = True
        kept[6, :] = kept[:, 6] = True
        flip = (rng.random(matrix.shape) < scramble) & ~kept
        matrix = np.where(flip, 1 - matrix, matrix)
    return (255 - np.kron(matrix, np.ones((module, module), np.uint8)) * 255).astype(np.uint8)


GOOD = b"INV-2026-0042"
BROKEN_AT = (1500, 900)  # top, left


def _page_with_a_broken_code() -> np.ndarray:
    """A white 1700 x 2400 page: a readable code, and below it one zxing locates but cannot
    read (a third of its data modules flipped)."""
    page = np.full((2400, 1700), 255, np.uint8)
    good = _symbol(GOOD, 8)
    page[200 : 200 + good.shape[0], 200 : 200 + good.shape[1]] = good
    broken = _symbol(b"https://example.com/invoice/2026/0042/pay?amount=1200.00", 8, scramble=0.3)
    top, left = BROKEN_AT
    page[top : top + broken.shape[0], left : left + broken.shape[1]] = broken
    return page


def test_a_located_symbol_no_stage_reads_makes_the_page_incomplete(classical: Engine) -> None:
    result = classical.scan(_page_with_a_broken_code())
    assert [code.data for code in result.codes] == [GOOD]
    # The page stayed open after the fast pass: the thorough stage had its go too.
    assert result.stages_run == ["fast", "thorough"]
    assert not result.complete
    [unread] = result.unread
    assert (unread.page, str(unread.reason)) == (0, "not_decoded")
    top, left = BROKEN_AT
    xs, ys = [p[0] for p in unread.quad], [p[1] for p in unread.quad]
    assert abs(min(xs) - left) < 4 and abs(min(ys) - top) < 4
    document = result.to_dict()
    assert document["complete"] is False
    assert document["unread"] == [
        {
            "quad": [[round(x, 1), round(y, 1)] for x, y in unread.quad],
            "page": 0,
            "reason": "not_decoded",
            "located_by": "zxing",
        }
    ]
    jsonschema.validate(
        document["unread"],
        DETECT_RESPONSE["properties"]["unread"],
        cls=jsonschema.Draft202012Validator,
    )


def test_a_page_whose_only_symbol_is_unreadable_is_a_successful_incomplete_scan(
    classical: Engine,
) -> None:
    page = _page_with_a_broken_code()
    page[:1000] = 255  # the readable code gone: nothing on the page reads
    result = classical.scan(page)
    assert result.ok and result.error is None and result.codes == []
    assert result.stages_run == ["fast", "thorough"]
    assert not result.complete
    assert [(str(u.reason), u.located_by) for u in result.unread] == [("not_decoded", "zxing")]


class WaitOutTheDeadline:
    """A stage that spends the scan's whole deadline (as a thorough pass over a large
    photo can), so the stages after it never run."""

    name = "wait"
    cost = 5.0

    def run(self, ctx: StageContext) -> None:
        while not ctx.deadline.expired():
            time.sleep(0.005)


def test_a_deadline_that_stops_the_cascade_says_the_symbol_is_unread_for_that() -> None:
    engine = Engine(CLASSICAL, stages=[FastStage(), WaitOutTheDeadline(), ThoroughStage()])
    result = engine.scan(_page_with_a_broken_code(), deadline_ms=1500)
    assert result.stages_run == ["fast", "wait"]
    assert [code.data for code in result.codes] == [GOOD]
    assert not result.complete
    assert [str(u.reason) for u in result.unread] == ["deadline"]


def test_want_first_is_complete_with_its_one_code_and_lists_nothing(classical: Engine) -> None:
    result = classical.scan(_page_with_a_broken_code(), want="first")
    assert [code.data for code in result.codes] == [GOOD]
    assert result.complete and result.unread == []


def test_a_clean_page_is_complete_with_nothing_unread(classical: Engine) -> None:
    result = classical.scan(digital_invoice(7, fmt="png").data)
    assert result.complete and result.codes
    assert result.to_dict()["unread"] == []


# What counts as located and unread ---------------------------------------------------------

SQUARE: Quad = ((100.0, 100.0), (200.0, 100.0), (200.0, 200.0), (100.0, 200.0))
ELSEWHERE = (500.0, 500.0, 640.0, 640.0)


def read(quad: Quad, data: bytes = b"x") -> Symbol:
    return Symbol(True, data.decode(), data, "QRCode", quad, "Text", "]Q1", "M", "1")


def located(quad: Quad) -> Symbol:
    return Symbol(False, "", b"", "QRCode", quad, "", "", "", "")


def test_a_detector_box_no_code_covers_keeps_the_page_open() -> None:
    findings = Findings()
    findings.add([read(SQUARE)], page=0, stage="fast", decoder="z", variant="reduced")
    assert findings.page_satisfied(0, "all")
    findings.detected(0, [0.9, 0.6], [(98.0, 99.0, 203.0, 201.0), ELSEWHERE])
    assert not findings.page_satisfied(0, "all")
    box = ((500.0, 500.0), (640.0, 500.0), (640.0, 640.0), (500.0, 640.0))
    assert findings.unread(0) == [(box, "detector")]
    assert findings.page_satisfied(0, "first")
    moved = tuple((x + 400.0, y + 400.0) for x, y in SQUARE)
    findings.add([read(moved, b"y")], page=0, stage="detect_small", decoder="z", variant="box")
    assert findings.unread(0) == [] and findings.page_satisfied(0, "all")


def test_one_symbol_reported_by_zxing_and_both_detectors_is_listed_once() -> None:
    findings = Findings()
    findings.add([located(SQUARE)], page=1, stage="fast", decoder="z", variant="reduced")
    findings.detected(1, [0.8], [(96.0, 95.0, 204.0, 206.0)])
    findings.detected(1, [0.7], [(102.0, 101.0, 199.0, 198.0)])
    assert findings.unread(1) == [(SQUARE, "zxing")]
    assert findings.unread(0) == []


# The soft decoder reads what zxing locates and cannot ----------------------------------------

SOFT_PAYLOAD = b"https://pay.example.com/inv/2026/0042?amount=120.00&iban=CH4431999123000889012"
GLARED = segno.make_qr(SOFT_PAYLOAD, error="l", mask=2)


def _page_with_a_glared_code() -> np.ndarray:
    """A white 1000 x 1400 page with a version 4-L code (6 px a module) whose middle third is
    washed out by glare (85% of its contrast gone): zxing locates it, and binarises the
    washed-out modules into more errors than Reed-Solomon corrects; ours reads them as
    unsure and corrects them as erasures."""
    matrix = np.array(GLARED.matrix, np.uint8)
    symbol = 255.0 - np.kron(matrix, np.ones((6, 6), np.float32)) * 255.0
    side = symbol.shape[0]
    lo, hi, left, right = (int(f * side) for f in (0.35, 0.65, 0.3, 0.6))
    symbol[lo:hi, left:right] = 255.0 - (255.0 - symbol[lo:hi, left:right]) * 0.15
    page = np.full((1400, 1000), 255.0, np.float32)
    page[300 : 300 + side, 300 : 300 + side] = symbol
    return page.astype(np.uint8)


def test_zxing_locates_the_glared_code_and_cannot_read_it() -> None:
    symbols = zxing_reader.read(_page_with_a_glared_code(), zxing_reader.Transform())
    assert symbols and not any(s.valid for s in symbols)
    assert any(s.format == "QRCode" for s in symbols)


@pytest.mark.parametrize("engine_name", ["neural", "classical"])
def test_the_soft_decoder_reads_it_in_the_fast_stage_with_its_erasures(engine_name, request):
    engine: Engine = request.getfixturevalue(engine_name)
    result = engine.scan(_page_with_a_glared_code())
    [code] = result.codes
    assert code.data == SOFT_PAYLOAD and code.text == SOFT_PAYLOAD.decode()
    assert (code.stage, code.decoder) == ("fast", "qrw-soft")
    assert code.variant.endswith("+soft")
    assert code.erasures is not None and code.erasures > 0
    assert code.errors_corrected is not None and code.errors_corrected >= 0
    assert (code.version, code.ec_level) == (str(GLARED.version), "L")
    assert result.stages_run == ["fast"] and result.complete and result.unread == []
    document = result.to_dict()["codes"][0]
    assert (document["erasures"], document["errors_corrected"]) == (
        code.erasures,
        code.errors_corrected,
    )
    jsonschema.validate(
        document,
        DETECT_RESPONSE["properties"]["codes"]["items"],
        cls=jsonschema.Draft202012Validator,
    )


def test_zxing_reads_carry_no_correction_counts(classical: Engine) -> None:
    [code] = classical.scan(digital_invoice(7, fmt="png").data).codes
    assert code.decoder.startswith("zxing-cpp")
    assert (code.errors_corrected, code.erasures) == (None, None)


def test_soft_reads_are_counted_by_stage() -> None:
    from prometheus_client import generate_latest

    from worker import metrics

    result = Engine(CLASSICAL).scan(_page_with_a_glared_code())
    metrics.observe_scan(result, "unit")
    metrics.observe_scan(result.to_dict(), "unit")
    text = generate_latest().decode()
    assert 'qrw_soft_reads_total{source="unit",stage="fast"} 2.0' in text
