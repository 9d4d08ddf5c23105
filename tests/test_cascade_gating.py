"""What the thorough pass does with what the earlier stages saw.

A page a detector looked at is searched where something was seen (detector boxes,
zxing's located-but-unread symbols) rather than blind; a page the detectors found blank
gets only the cheap whole-page read and CLAHE; a page no detector looked at (the
classical cascade) still gets the exhaustive search."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest
import segno

from models.synth import digital_invoice
from models.synth.corpus import corpus_sample
from worker.engine import Engine, deadline
from worker.engine.cascade import Findings, StageContext
from worker.engine.deadline import Deadline
from worker.engine.detector.detector import Detector
from worker.engine.detector.geometry import Detection
from worker.engine.engine import default_stages
from worker.engine.images import document_from_array, open_document
from worker.engine.stages import DetectorStage, FastStage, ThoroughStage
from worker.engine.zxing_reader import Symbol
from worker.settings import Settings

SETTINGS = Settings(backend="none")


def located(quad: tuple[tuple[float, float], ...]) -> Symbol:
    """A symbol zxing located but could not read."""
    return Symbol(False, "", b"", "QRCode", quad, "", "", "", "")  # type: ignore[arg-type]


SQUARE = ((100.0, 100.0), (200.0, 100.0), (200.0, 200.0), (100.0, 200.0))


def test_a_page_no_detector_looked_at_is_not_blind() -> None:
    assert not Findings().searched_blind(0)


def test_a_page_the_detectors_found_blank_is_searched_blind() -> None:
    findings = Findings()
    findings.detected(0, [])
    findings.detected(0, [])
    assert findings.searched_blind(0)
    assert findings.regions(0) == []


def test_a_detection_or_a_located_symbol_makes_a_page_worth_a_search() -> None:
    findings = Findings()
    findings.detected(0, [0.4], [(10.0, 20.0, 110.0, 120.0)])
    findings.detected(1, [])
    findings.add([located(SQUARE)], page=1, stage="fast", decoder="z", variant="reduced")
    assert not findings.searched_blind(0) and not findings.searched_blind(1)
    assert findings.regions(0) == [(10.0, 20.0, 110.0, 120.0)]
    assert findings.regions(1) == [(100.0, 100.0, 200.0, 200.0)]


def test_a_region_where_a_code_was_read_is_not_searched_again() -> None:
    findings = Findings()
    findings.detected(0, [0.9, 0.5], [(100.0, 100.0, 200.0, 200.0), (500.0, 500.0, 600.0, 600.0)])
    read = Symbol(True, "x", b"x", "QRCode", SQUARE, "Text", "]Q1", "M", "1")
    findings.add([read], page=0, stage="fast", decoder="z", variant="reduced")
    assert findings.regions(0) == [(500.0, 500.0, 600.0, 600.0)]


def _context(page: np.ndarray, findings: Findings, deadline_ms: int = 0) -> StageContext:
    document = document_from_array(page, SETTINGS)
    return StageContext(document, SETTINGS, Deadline(deadline_ms), "all", findings)


def _faded_code_on_a_shaded_page() -> tuple[np.ndarray, bytes, tuple[float, float, float, float]]:
    """A 2400 x 1800 page, light on the left and dark on the right, with a faded code:
    a global threshold loses it in the gradient, and zxing's local binariser on the
    whole page does not find it at this contrast."""
    payload = b"SPC\n0200\n1\nCH4431999123000889012\nregion pass"
    matrix = np.array(segno.make_qr(payload, error="m").matrix, np.uint8)
    symbol = np.kron(matrix, np.ones((4, 4), np.uint8))
    page = np.tile(np.linspace(235, 60, 2400, dtype=np.float32), (1800, 1))
    y, x = 900, 1500
    h, w = symbol.shape
    patch = page[y : y + h, x : x + w]
    page[y : y + h, x : x + w] = patch - symbol * 14.0
    rng = np.random.default_rng(5)
    page = np.clip(page + rng.normal(0, 2.0, page.shape), 0, 255).astype(np.uint8)
    return page, payload, (float(x), float(y), float(x + w), float(y + h))


def test_the_region_pass_reads_a_code_the_cheap_whole_page_reads_miss() -> None:
    page, payload, box = _faded_code_on_a_shaded_page()
    unguided = Findings()
    unguided.detected(0, [0.5])  # seen, but the detector gave no box: whole-page reads only
    ThoroughStage().run(_context(page, unguided))
    assert unguided.codes == []
    guided = Findings()
    guided.detected(0, [0.5], [box])
    ThoroughStage().run(_context(page, guided))
    assert [code.data for code in guided.codes] == [payload]
    assert guided.codes[0].variant.startswith("region")
    # The quad comes back in page pixels, where the code is.
    xs = [p[0] for p in guided.codes[0].quad]
    assert box[0] - 8 <= min(xs) and max(xs) <= box[2] + 8


# Engine-level: photos never in the benchmark (seed 0) or in training (seeds 1000+).


@pytest.fixture(scope="module")
def neural() -> Engine:
    return Engine(Settings(backend="onnx"))


def test_a_faded_photo_the_detectors_find_blank_is_still_read(neural: Engine) -> None:
    # Neither detector sees this code and zxing locates nothing on the page: the gated
    # pass still gives it CLAHE over the whole page, which reads it.
    sample = corpus_sample("low_contrast", 5, seed=7)
    result = neural.scan(sample.data)
    assert [code.data for code in result.codes] == [code.payload for code in sample.codes]
    assert [(code.stage, code.variant) for code in result.codes] == [("thorough", "clahe")]


def test_a_page_the_detectors_looked_at_is_read_whole_once_by_the_thorough_pass(
    neural: Engine,
) -> None:
    # A decoy page both detectors and the thorough pass look at (it reads nothing): the
    # thorough pass reads the whole page once, with zxing-cpp's local binarizer, and spends
    # the rest around what was seen; no global-histogram read of the whole page, nor one of
    # it median-filtered (they read no code over the benchmark corpus and qr-photos-val that
    # the cascade did not read without them). Seen in the work charged: the largest median
    # filter and global-histogram read are of crops, smaller than the page.
    largest: dict[str, float] = defaultdict(float)

    def charged(kind: str, amount: float) -> None:
        largest[kind] = max(largest[kind], amount)

    sample = corpus_sample("none", 0, seed=7)
    deadline.tracer = charged
    try:
        result = neural.scan(sample.data)
    finally:
        deadline.tracer = None
    assert result.codes == [] and "thorough" in result.stages_run
    page = largest["zxing LocalAverage+invert+downscale"]  # the whole page, read once
    assert largest["median"] < page
    assert largest["zxing GlobalHistogram+invert+downscale"] < page


def test_a_symbol_zxing_located_keeps_the_page_out_of_the_blind_gate(neural: Engine) -> None:
    sample = corpus_sample("low_contrast", 13, seed=7)
    result = neural.scan(sample.data)
    assert [code.data for code in result.codes] == [code.payload for code in sample.codes]
    # Since issue 19 the soft decoder reads the located symbol where the fast pass found it;
    # without that read, the symbol keeps the page for the guided thorough pass.
    code = result.codes[0]
    assert code.stage == "thorough" or (code.stage, code.decoder) == ("fast", "qrw-soft")


def test_regions_around_decoys_yield_no_invented_code() -> None:
    # Pages with barcodes, 2-D symbols and logos where QR codes were: the detector boxes
    # them, and every region variant runs on each box without reading a code.
    detector = Detector.load("small", Settings(backend="onnx"))
    boxed = 0
    for index in range(6):
        document = open_document(corpus_sample("none", index, seed=7).data, SETTINGS)
        page = document.pages[0]
        reduced, scale = page.gray(SETTINGS.fast_max_side)
        detections = detector.detect(reduced)
        findings = Findings()
        findings.detected(
            0, [d.score for d in detections], [_in_page(d.box, scale) for d in detections]
        )
        boxed += bool(findings.regions(0))
        ThoroughStage().run(StageContext(document, SETTINGS, Deadline(0), "all", findings))
        assert findings.codes == []
    assert boxed >= 3


def _in_page(box: tuple[float, ...], scale: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (v / scale for v in box)
    return (x0, y0, x1, y1)


def test_a_passed_deadline_leaves_the_region_pass_undone() -> None:
    page, _, box = _faded_code_on_a_shaded_page()
    findings = Findings()
    findings.detected(0, [0.5], [box] * 4)
    ctx = _context(page, findings, deadline_ms=1)
    time.sleep(0.005)
    ThoroughStage().run(ctx)
    assert findings.codes == []


def test_a_photo_the_fast_pass_read_part_of_gets_the_detectors_look(neural: Engine) -> None:
    # Four codes; the fast pass reads two and does not even locate the blurred two, so
    # without another look the page would count as done.
    sample = corpus_sample("multi", 9, seed=7)
    truth = {code.payload for code in sample.codes}
    settings = Settings(backend="onnx")
    stages = [FastStage() if s.name == "fast" else s for s in default_stages(settings)]
    fast_only = Engine(settings, stages=stages).scan(sample.data)
    assert fast_only.stages_run == ["fast"]
    assert {code.data for code in fast_only.codes} < truth
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == truth
    # The medium model's stage too: the small one doubts a place (scores it just under its
    # threshold), which the medium looks at (worker.engine.stages.detect, DetectorStage._doubt).
    assert result.stages_run == ["fast", "detect_small", "detect_medium"]


def test_a_rendered_invoice_is_taken_at_its_word(neural: Engine) -> None:
    # Digital invoices are mostly full white: the fast pass's reads settle them.
    result = neural.scan(digital_invoice(3, fmt="jpeg").data)
    assert result.stages_run == ["fast"] and result.codes


def test_want_first_is_settled_by_the_first_code_on_a_photo(neural: Engine) -> None:
    result = neural.scan(corpus_sample("multi", 9, seed=7).data, want="first")
    assert result.stages_run == ["fast"] and len(result.codes) == 1


class CountingDetector(Detector):
    """A real detector that counts the pages it is asked to look at."""

    def __init__(self, inner: Detector) -> None:
        super().__init__(inner.size, inner.session, inner.threshold)
        self.calls = 0

    def detect(self, gray: np.ndarray, threshold: float | None = None) -> list[Detection]:
        self.calls += 1
        return super().detect(gray, threshold)


def _engine_counting_medium() -> tuple[Engine, CountingDetector]:
    settings = Settings(backend="onnx")
    medium = CountingDetector(Detector.load("medium", settings))
    stages = [
        FastStage(look_again_at_photos=True),
        DetectorStage(Detector.load("small", settings), cost=2.0),
        DetectorStage(medium, cost=3.0),
        ThoroughStage(),
    ]
    return Engine(settings, stages=stages), medium


def test_the_medium_model_leaves_a_page_the_small_one_found_blank() -> None:
    engine, medium = _engine_counting_medium()
    result = engine.scan(corpus_sample("none", 0, seed=7).data)  # the small model sees nothing
    assert result.codes == [] and medium.calls == 0
    engine.scan(corpus_sample("none", 1, seed=7).data)  # it boxes a decoy: medium looks too
    assert medium.calls == 1


def test_the_medium_model_still_reads_what_the_small_one_saw_but_could_not_read() -> None:
    # Sample 6 was this test's until the small model's stage read it (zxing-cpp's outline in
    # its outlined crop reaches past the first soft look at the detector's corners, and gets
    # a look of its own): 15 is one the small model's stage still cannot read.
    engine, medium = _engine_counting_medium()
    sample = corpus_sample("perspective", 15, seed=7)
    result = engine.scan(sample.data)
    assert medium.calls == 1
    assert {code.data for code in result.codes} == {code.payload for code in sample.codes}
    assert result.codes[0].stage == "detect_medium"


def test_a_place_the_small_model_doubts_gets_the_medium_models_look_at_it_alone() -> None:
    # The small model reads the code and scores another place 0.2-0.3 (a doubt): the medium
    # model looks at that place alone (a few ms), does not box it, and its whole-page
    # inference (60-90 ms) is never run.
    engine, medium = _engine_counting_medium()
    sample = corpus_sample("blurred", 0, seed=7)
    result = engine.scan(sample.data)
    assert result.stages_run == ["fast", "detect_small", "detect_medium"]
    assert medium.calls == 0 and result.complete
    assert {code.data for code in result.codes} == {code.payload for code in sample.codes}
