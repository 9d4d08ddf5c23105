"""A QR look-alike is no symbol (issue 19, pages without a code): three finder patterns round
random modules (models/synth/decoys.finder_logo, a brand's decoration) get the soft decoder's
verdict NOT_A_SYMBOL, the place is ruled out, and no stage reads it again; a real symbol whose
timing patterns are stained is still a symbol, and reads.

On the benchmark's `none` pages the detectors and zxing-cpp locate such look-alikes, and every
stage read them again, at every enhancement, for nothing: 50-100 ms of CPU a look-alike a stage.
"""

from __future__ import annotations

import numpy as np
import pytest
import segno

from models.synth.decoys import finder_logo
from worker.bench.false_reads import render, whole
from worker.engine.cascade import Findings, bounds
from worker.engine.qr import NotASymbol, SoftRead, examine
from worker.engine.results import Quad
from worker.engine.zxing_reader import Symbol

BOX = (40, 40, 360, 360)
PLACE: Quad = ((40.0, 40.0), (360.0, 40.0), (360.0, 360.0), (40.0, 360.0))
TEXT = "INVOICE 42"


def _look_alike(seed: int) -> np.ndarray:
    page = np.full((400, 400), 255, np.uint8)
    finder_logo(page, BOX, np.random.default_rng(seed))
    return page


def test_a_finder_logo_is_not_a_symbol() -> None:
    """Of 12 look-alikes, half get the verdict within a place's budget (soft.BUDGET_UNITS);
    the rest (timing modules beside the finders right by chance, or a grid the random
    alignment area pulled off the finders) are read as any unreadable place is, and none
    reads as a code."""
    found = [examine(_look_alike(seed), PLACE, budget_units=30) for seed in range(12)]
    assert sum(isinstance(f, NotASymbol) for f in found) == 6
    assert all(f is None or isinstance(f, NotASymbol) for f in found)


def _symbol(version: int) -> np.ndarray:
    code = segno.make_qr(TEXT, version=version, error="m")
    return np.array(code.matrix, dtype=bool)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_symbol_with_a_stained_timing_row_reads(version: int) -> None:
    """Ink over the whole top timing row (the decoder samples half its modules wrong): the
    finders are sharp, but the format copies agree, so it is a symbol, and it reads."""
    modules = _symbol(version)
    size = modules.shape[0]
    modules[5:8, 8 : size - 8] = True
    image = render(modules, 6)
    found = examine(image, whole(image), budget_units=60)
    assert isinstance(found, SoftRead)
    assert found.text == TEXT


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_symbol_with_both_timing_rows_stained_is_no_look_alike(version: int) -> None:
    """Both timing patterns and the alignment pattern under ink (at chance, or worse): the
    format copies still name one codeword, so the place is never ruled out."""
    modules = _symbol(version)
    size = modules.shape[0]
    modules[5:8, 8 : size - 8] = True
    modules[8 : size - 8, 5:8] = True
    modules[size - 11 : size - 4, size - 11 : size - 4] = True
    image = render(modules, 6)
    assert not isinstance(examine(image, whole(image), budget_units=60), NotASymbol)


def test_a_place_not_a_symbol_keeps_no_page_open() -> None:
    """A look-alike zxing-cpp located (and a detector boxed) on a page with a code read: the
    page is done, and the result names the look-alike as ruled out, once."""
    findings = Findings()
    code = Symbol(
        True,
        "x",
        b"x",
        "QRCode",
        ((500.0, 500.0), (600.0, 500.0), (600.0, 600.0), (500.0, 600.0)),
        "Text",
        "]Q1",
        "M",
        "1",
    )
    located = Symbol(False, "", b"", "QRCode", PLACE, "Text", "", "", "")
    findings.add([code, located], page=0, stage="fast", decoder="zxing-cpp", variant="plain")
    findings.detected(0, [0.5], [bounds(PLACE)])
    assert not findings.page_satisfied(0, "all")
    findings.not_a_symbol(0, PLACE)
    findings.not_a_symbol(0, PLACE)
    assert findings.unread(0) == []
    # A part of it zxing-cpp located as a symbol of its own is the look-alike too.
    part: Quad = ((60.0, 60.0), (120.0, 60.0), (120.0, 120.0), (60.0, 120.0))
    findings.add(
        [Symbol(False, "", b"", "MicroQRCode", part, "Text", "", "", "")],
        page=0,
        stage="fast",
        decoder="zxing-cpp",
        variant="plain",
    )
    assert findings.unread(0) == []
    assert findings.regions(0) == []
    assert findings.ruled_out(0) == [PLACE]
    assert findings.page_satisfied(0, "all")
