"""The zoomed last look (worker/engine/stages/zoom.py) at steep views of a code (issue 19,
the `perspective` category).

At a steep angle a code's far side is a module or less a pixel: the detectors, on the page
reduced to their input, score it under their threshold or box it with corners ten modules
off, and every stage leaves it unread. The photos are models.synth's perspective category
with seed 7 (never in the benchmark, seed 0).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.synth.corpus import CorpusSample, corpus_sample
from models.synth.qrcodes import render_code
from worker.engine import Engine, rectify
from worker.engine.stages import ZoomStage, zoom
from worker.settings import Settings


def _photo(index: int) -> tuple[bytes, np.ndarray, bytes]:
    sample = corpus_sample("perspective", index, seed=7)
    code = sample.codes[0]
    return sample.data, np.asarray(code.quad, np.float32), code.payload


@pytest.mark.parametrize("index", [12, 52])
def test_a_steep_view_the_cascade_left_unread_is_read_by_the_zoom(
    engine: Engine, settings: Settings, index: int
) -> None:
    """Sample 12 is read by the soft decoder on the zoom's outline, 52 by zxing-cpp."""
    data, _, payload = _photo(index)
    without = Engine(settings, [s for s in engine.stages if not isinstance(s, ZoomStage)])
    assert payload not in [code.data for code in without.scan(data, deadline_ms=0).codes]
    result = engine.scan(data, deadline_ms=0)
    assert [(code.data, code.stage) for code in result.codes] == [(payload, "zoom")]


@pytest.mark.parametrize("index", [16, 77, 97])
def test_the_zoom_reads_its_refined_outline_from_the_page_pixels(
    engine: Engine, settings: Settings, index: int
) -> None:
    """The zoom outlines each of these codes within a pixel, and neither zxing-cpp nor the
    soft decoder read the view it warped from that outline: bicubic enlargement of a far
    side a pixel a module spreads and rings each module into its neighbours. The soft
    decoder reads the same outline from the page's own pixels (97), and with each direction's
    blur taken out by a share of its own (worker.engine.qr.grid.equalise) the other two."""
    data, _, payload = _photo(index)
    without = Engine(settings, [s for s in engine.stages if not isinstance(s, ZoomStage)])
    assert payload not in [code.data for code in without.scan(data, deadline_ms=0).codes]
    result = engine.scan(data, deadline_ms=0)
    assert [(code.data, code.stage) for code in result.codes] == [(payload, "zoom")]


def test_a_bent_page_code_the_zoom_outlines_is_read_from_its_view(
    engine: Engine, settings: Settings
) -> None:
    """models.synth's curved photo 8 (seed 7), the zoom alone (the cascade reads it by the
    detector's late variants or by the zoom, as their work budgets fall): the code's edges are
    bowed, so the refined outline (four straight sides) is no grid for it in the page's
    pixels; in the view warped from it the code is upright and enlarged, and the soft decoder
    finds its finders there. The zoom reads the page first (steep codes), then the view."""
    sample = corpus_sample("curved", 8, seed=7)
    alone = Engine(settings, [s for s in engine.stages if isinstance(s, ZoomStage)])
    result = alone.scan(sample.data, deadline_ms=0)
    assert [(code.data, code.stage) for code in result.codes] == [(sample.codes[0].payload, "zoom")]


@pytest.mark.parametrize("index", [23, 89])
def test_a_code_the_detector_boxes_only_at_half_the_pixels_is_read_by_the_zoom(
    engine: Engine, settings: Settings, index: int
) -> None:
    """The small model scores a steep code's sliver erratically from one scale to the next:
    over these pages at 0.4 of their pixels it boxes nothing there over its threshold, at 0.5
    it does, and the zoom reads that box's outline."""
    data, _, payload = _photo(index)
    without = Engine(settings, [s for s in engine.stages if not isinstance(s, ZoomStage)])
    assert payload not in [code.data for code in without.scan(data, deadline_ms=0).codes]
    result = engine.scan(data, deadline_ms=0)
    assert [(code.data, code.stage) for code in result.codes] == [(payload, "zoom")]


def test_a_box_off_the_code_still_outlines_it() -> None:
    """A detector's box of a steep code can take in the text below it: the crop's centre then
    falls a little outside the code's blob (benchmark perspective photo 85: 3% of the crop's
    side). No blob holds the centre; the nearest within the zoom's reach is the code's."""
    code = render_code(b"INV-2024-0001 total 118.40", True, module_px=6, min_version=3)
    crop = np.full((320, 320), 235, np.uint8)
    target = np.array([[20, 30], [280, 20], [270, 150], [10, 150]], np.float32)
    warp = cv2.getPerspectiveTransform(np.array(code.quad, np.float32), target)
    cv2.warpPerspective(code.image, warp, crop.shape[::-1], crop, borderMode=cv2.BORDER_TRANSPARENT)
    assert rectify.outline(crop) is None
    corners = rectify.outline(crop, zoom.OUTLINE_REACH)
    assert corners is not None
    # The finder corners are exact to a module; the fourth may be cut by light modules.
    assert np.abs(corners - target)[[0, 1, 3]].max() < 8.0


def test_the_benchmark_code_whose_box_is_off_it_is_read_by_the_zoom(engine: Engine) -> None:
    sample = corpus_sample("perspective", 85)
    result = engine.scan(sample.data, deadline_ms=0)
    assert [(code.data, code.stage) for code in result.codes] == [(sample.codes[0].payload, "zoom")]


@pytest.mark.parametrize("index", [30, 119])
def test_a_photo_a_little_over_the_zoom_size_is_read_at_full_resolution(
    engine: Engine, index: int
) -> None:
    """A JPEG asked for at ZOOM_MAX_SIDE comes DCT-scaled to half when it is a little
    larger (1839 and 1797 px here): the zoom cut its views from that half, where the far
    side is half a pixel a module, and read neither; from the thorough pass's image it does."""
    data, _, payload = _photo(index)
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert max(gray.shape) > zoom.ZOOM_MAX_SIDE
    result = engine.scan(data, deadline_ms=0)
    assert [(code.data, code.stage) for code in result.codes] == [(payload, "zoom")]


def _module(quad: np.ndarray, modules: int) -> float:
    return float(np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1).mean()) / modules


@pytest.mark.parametrize("index", [12, 52])
def test_an_outline_modules_off_is_moved_onto_the_code_edges(index: int) -> None:
    """The blob outline of a steep code is a module or more off at the far corners; the
    hull's straight edges put every corner within a module, most within half of one."""
    data, truth, _ = _photo(index)
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    modules = corpus_sample("perspective", index, seed=7).codes[0].modules
    module = _module(truth, modules)
    # Each corner pushed two modules along a different direction, as outline() leaves them.
    push = np.array([[-2.0, -1.0], [2.0, -1.5], [1.5, 2.0], [-1.0, 2.0]], np.float32) * module
    refined = rectify.refine_outline(gray, truth + push)
    assert refined is not None
    refined = rectify.refine_outline(gray, refined)
    assert refined is not None
    errors = np.linalg.norm(refined - truth, axis=1) / module
    assert errors.max() < 1.0 and float(np.median(errors)) < 0.6


def test_no_blob_no_outline() -> None:
    """A flat view (nothing dark at its centre) gives no outline rather than a guess."""
    page = np.full((400, 400), 200, np.uint8)
    page[:40, :40] = 20
    quad = np.array([[150, 150], [250, 150], [250, 250], [150, 250]], np.float32)
    assert rectify.refine_outline(page, quad) is None


def test_a_page_of_decoys_reads_nothing(engine: Engine) -> None:
    """models.synth's `none` photos (logos, barcodes, text and no QR code) seed 7: the zoom
    runs on them (nothing else reads them) and reads nothing."""
    for index in range(3):
        result = engine.scan(corpus_sample("none", index, seed=7).data, deadline_ms=0)
        assert "zoom" in result.stages_run
        assert result.codes == []


def test_a_code_the_zoom_boxes_and_cannot_read_is_named_and_the_page_not_complete(
    engine: Engine,
) -> None:
    """The benchmark's perspective photo 34 (seed 0): no stage before the zoom locates its
    code; the zoom boxes it, outlines it within half a module and no decoder reads the
    view. The scan said `complete: true` with no code and nothing unread: a code located
    and dropped. A box the zoom leaves unread is a located symbol like any detector's:
    read, or named in `unread` with the page not complete."""
    _read_or_named_unread(engine, corpus_sample("perspective", 34))


def _read_or_named_unread(engine: Engine, sample: CorpusSample) -> None:
    """The sample's one code is read, or a detector's box over it is named in `unread`
    (not decoded) and the page is not complete."""
    (truth,) = sample.codes
    result = engine.scan(sample.data, deadline_ms=0)
    if truth.payload in [code.data for code in result.codes]:
        return  # read since: nothing is left to name
    centre = tuple(float(v) for v in np.asarray(truth.quad, np.float32).mean(axis=0))
    named = [
        u
        for u in result.unread
        if cv2.pointPolygonTest(np.asarray(u.quad, np.float32), centre, False) >= 0
    ]
    assert not result.complete, result.unread
    assert [(u.located_by, u.reason.value) for u in named] == [("detector", "not_decoded")]


def _looked_at(engine: Engine, data: bytes) -> bool:
    """Whether the zoom looked at the page of `data` after the fast pass (the zoom names
    every page it looks at among the detectors' pages, boxes or none)."""
    from worker.engine.cascade import Findings, StageContext
    from worker.engine.deadline import Deadline
    from worker.engine.images import DecodeClock, open_document
    from worker.engine.stages import FastStage

    document = open_document(data, engine.settings, DecodeClock(), Deadline(0))
    ctx = StageContext(document, engine.settings, Deadline(0), "all", Findings())
    FastStage().run(ctx)
    (stage,) = [s for s in engine.stages if isinstance(s, ZoomStage)]
    stage.run(ctx)
    return 0 in ctx.findings.detector_scores


@pytest.mark.parametrize("index", [3, 7])
def test_the_zoom_does_not_look_at_a_rendered_page(engine: Engine, index: int) -> None:
    """models.synth's `none` pages 3 (a PNG) and 7 (a PDF of a page image), seed 7: rendered
    invoices, mostly paper at full white, with decoys and no QR code. The zoom is a look for
    a photo's steep code; on the benchmark's 253 rendered pages it read none and cost the
    `none` ones 100 ms a page of CPU on average (2026-12-07, 1,850 images)."""
    assert not _looked_at(engine, corpus_sample("none", index, seed=7).data)


def test_the_zoom_still_looks_at_a_photo(engine: Engine) -> None:
    """`none` photo 0, seed 7: a photo of an invoice (room light: not rendered)."""
    assert _looked_at(engine, corpus_sample("none", 0, seed=7).data)


def _zoom_outlines(engine: Engine, data: bytes) -> list[tuple[np.ndarray, tuple[float, ...]]]:
    """Each place the zoom boxes on the page of `data` whose box it outlines: (outline, box),
    in the thorough pass's pixels, as ZoomStage._read finds them."""
    from worker.engine.deadline import Deadline
    from worker.engine.images import DecodeClock, open_document

    (stage,) = [s for s in engine.stages if isinstance(s, ZoomStage)]
    page = open_document(data, engine.settings, DecodeClock(), Deadline(0)).pages[0]
    gray, _ = page.gray(engine.settings.thorough_max_side)
    found = []
    for place in stage._places(gray):
        for box in place:
            quad = zoom._outline(gray, box)
            if quad is not None:
                found.append((quad, box))
                break
    return found


def test_an_outline_that_took_in_the_sheet_round_the_code_is_not_the_codes_own(
    engine: Engine,
) -> None:
    """The benchmark's noisy_jpeg photo 49: the zoom's box of the code outlines the whole
    sheet of paper it is printed on (its hull refined outwards onto the sheet's edges), 15
    times the box. A view of that is the sheet rectified, the code a small part of it: the
    zoom warped it at 1200 pixels a side and ran zxing-cpp and the decoder over it (such
    places took 250-380 ms of CPU each) and read nothing. The steep codes it reads are
    their own outlines, at most about their box."""
    (quad, box), *_ = _zoom_outlines(engine, corpus_sample("noisy_jpeg", 49).data)
    area = cv2.contourArea(quad.reshape(-1, 1, 2))
    assert area > 10 * (box[2] - box[0]) * (box[3] - box[1])
    assert not zoom.own_outline(quad, box)
    for index in (17, 85):  # read by zxing-cpp on the view, and by the decoder on the page
        (quad, box), *_ = _zoom_outlines(engine, corpus_sample("perspective", index).data)
        assert zoom.own_outline(quad, box)


def test_a_code_whose_outline_is_not_its_own_is_still_searched_for_in_the_page(
    engine: Engine,
) -> None:
    """The benchmark's low_contrast photo 91: the zoom's outline of its faint code takes in
    the page round it (14.5 times its box); no view of it is made, but the decoder searches
    the page's pixels within it for the code's finders, and reads it."""
    sample = corpus_sample("low_contrast", 91)
    (quad, box), *_ = _zoom_outlines(engine, sample.data)
    assert not zoom.own_outline(quad, box)
    result = engine.scan(sample.data, deadline_ms=0)
    assert [(code.data, code.stage) for code in result.codes] == [(sample.codes[0].payload, "zoom")]


@pytest.mark.parametrize("index", [27, 97])
def test_a_faded_code_no_plain_look_boxes_is_located_by_the_contrast_equalised_look(
    engine: Engine, index: int
) -> None:
    """The benchmark's low_contrast photos 27 and 97 (seed 0): a faded print keeping 4% of
    its contrast, the page round it at full contrast. No detector boxed the code at any
    scale, and the scan said `complete: true` with no code and nothing unread: a silent
    miss. The zoom's look at FADED_AT, contrast-equalised, boxes it: read, or named in
    `unread` with the page not complete."""
    _read_or_named_unread(engine, corpus_sample("low_contrast", index))
