"""Hard photos the detector finds but a plain crop cannot be read from: each late crop
variant reads a code nothing before it reads, and never invents one.

Samples are drawn with seed 7 (never in the benchmark, seed 0, or in training, 1000+).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.synth.corpus import corpus_sample
from models.synth.qrcodes import render_code
from worker.engine import Engine, enhance, finders, rectify, zxing_reader
from worker.engine.qr import decoder
from worker.engine.stages import ZoomStage, detect, outlined
from worker.engine.zxing_reader import Transform
from worker.settings import Settings


@pytest.fixture(scope="module")
def neural() -> Engine:
    return Engine(Settings(backend="onnx"))


# Every crop variant added for the hard photos: a code "only the new path reads" is one
# the engine without all of them cannot read.
LATE = {
    "rectified_deshake",
    "box_deshake",
    "rectified_defocus",
    "rectified_defocus_light",
    "rectified_finder",
    "outlined",
    "outlined_deshake",
    "outlined_finder",
    "rectified_clahe_local",
}


def _without(engine: Engine, names: set[str]) -> Engine:
    """The same engine with some crop variants taken out (restored by the caller), and
    without the zoom's last look (worker.engine.stages.zoom), which reads some of these
    photos too: what is shown here is which crop variant they need in the detector stages."""
    detect.VARIANTS = tuple(v for v in detect.VARIANTS if v.name not in names)
    return Engine(engine.settings, [s for s in engine.stages if not isinstance(s, ZoomStage)])


@pytest.fixture
def without_variants():  # type: ignore[no-untyped-def]
    saved = detect.VARIANTS
    yield lambda engine, names: _without(engine, names)
    detect.VARIANTS = saved


def _shaken_code(length: float, angle: float) -> np.ndarray:
    """A crisp grid of modules smeared by camera shake, the way models.synth does it."""
    rng = np.random.default_rng(3)
    modules = rng.integers(0, 2, (33, 33)).astype(np.uint8) * 255
    image = cv2.resize(modules, (33 * 6, 33 * 6), interpolation=cv2.INTER_NEAREST)
    image = cv2.copyMakeBorder(image, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255)
    kernel = enhance.shake_kernel(enhance.Shake(angle, length))
    return cv2.filter2D(image, -1, kernel)


def test_the_shake_of_a_smeared_photo_is_measured() -> None:
    shake = enhance.estimate_shake(_shaken_code(length=12.0, angle=30.0))
    assert shake is not None
    assert abs(shake.angle - 30.0) < 6.0
    assert 10.0 <= shake.length <= 14.5


def test_an_unshaken_image_is_left_alone() -> None:
    sharp = _shaken_code(length=0.0, angle=0.0)
    defocused = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    assert enhance.estimate_shake(sharp) is None
    assert enhance.deblur_shake(defocused) is None


@pytest.mark.parametrize("index", [1, 2])
def test_a_shaken_photo_only_deconvolution_reads_is_read(
    neural: Engine, without_variants, index: int
) -> None:  # type: ignore[no-untyped-def]
    sample = corpus_sample("motion", index, seed=7)
    truth = {code.payload for code in sample.codes}
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == truth
    assert result.codes[0].variant == "rectified_deshake"
    assert without_variants(neural, LATE).scan(sample.data).codes == []


def test_pages_without_a_code_get_no_invented_one_from_the_late_variants(neural: Engine) -> None:
    for category, index in [("none", i) for i in range(4)] + [("motion", 0)]:
        sample = corpus_sample(category, index, seed=11)
        truth = {code.payload for code in sample.codes}
        assert {code.data for code in neural.scan(sample.data).codes} <= truth


def _torn_code() -> tuple[np.ndarray, bytes]:
    """A clean version-4 code whose top-right finder is covered by a torn-off flap."""
    payload = b"https://tax.example/inv/2024-000917?total=118.40"
    code = render_code(payload, True, module_px=8, error="q", min_version=4)
    image = code.image.copy()
    (_, y0), (x1, _), _, _ = code.quad
    flap = np.array([[x1 - 11 * 8, y0 - 20], [x1 + 20, y0 - 20], [x1 + 20, y0 + 11 * 8]], np.int32)
    cv2.fillConvexPoly(image, flap, 90)
    return image, payload


def test_two_surviving_finders_say_where_the_third_goes() -> None:
    image, payload = _torn_code()
    assert len(finders.find_finders(image)) == 2
    assert not [s for s in zxing_reader.read(image, Transform()) if s.valid]
    reads = [
        s.data
        for candidate in finders.restore_finder(image)
        for s in zxing_reader.read(candidate, Transform())
        if s.valid
    ]
    assert reads == [payload]


def test_a_whole_code_or_a_page_of_text_gets_no_redrawn_finder() -> None:
    whole = render_code(b"INV-2024-0001", True, module_px=8).image
    assert finders.restore_finder(whole) == []
    text = np.full((400, 400), 255, np.uint8)
    for row in range(20, 380, 24):
        cv2.putText(text, "Invoice 2024 total 118.40", (10, row), 0, 0.6, 0, 1)
    assert finders.restore_finder(text) == []


@pytest.mark.parametrize("index", [23])
def test_a_torn_photo_only_the_two_surviving_finders_read_is_read(
    neural: Engine, without_variants, index: int, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    sample = corpus_sample("damaged", index, seed=7)
    truth = {code.payload for code in sample.codes}
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == truth
    # The soft decoder reads it from the detector's box, the covered finder placed where the
    # two surviving ones say (worker.engine.qr.decoder), before any later stage; without
    # that, from the outline the two finders give (worker.engine.outline) before any late
    # variant runs; the redrawn finder reads it where those reads are off.
    assert result.codes[0].variant == "soft"
    monkeypatch.setattr(decoder, "_PAIR_TRIPLES", 0)
    assert neural.scan(sample.data).codes[0].variant == outlined.VARIANT
    monkeypatch.setattr(outlined, "BUDGET_UNITS", 0.0)
    assert neural.scan(sample.data).codes[0].variant == "rectified_finder"
    assert without_variants(neural, LATE).scan(sample.data).codes == []


# blurred-7 (seed 7) was here with rectified_defocus: since the soft decoder enlarges small
# crops by cubic interpolation (worker.engine.qr.decoder._UPSCALE) it reads that photo from
# the unsharp-masked crop, before any late variant.
@pytest.mark.parametrize(("index", "variant"), [(2, "rectified_defocus_light")])
def test_a_soft_photo_only_deconvolution_reads_is_read(
    neural: Engine, without_variants, index: int, variant: str
) -> None:  # type: ignore[no-untyped-def]
    sample = corpus_sample("blurred", index, seed=7)
    truth = {code.payload for code in sample.codes}
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == truth
    assert result.codes[0].variant == variant
    assert without_variants(neural, LATE).scan(sample.data).codes == []


def test_the_outline_of_a_steeply_viewed_code_is_found() -> None:
    code = render_code(b"INV-2024-0001 total 118.40", True, module_px=6, min_version=3)
    side = code.image.shape[0]
    page = np.full((side * 2, side * 2), 235, np.uint8)
    target = np.array([[60, 90], [330, 40], [350, 380], [40, 300]], np.float32)
    source = np.array(code.quad, np.float32)
    warp = cv2.getPerspectiveTransform(source, target)
    cv2.warpPerspective(code.image, warp, page.shape[::-1], page, borderMode=cv2.BORDER_TRANSPARENT)
    corners = rectify.outline(page[:420, :420])
    assert corners is not None
    # The finder corners are exact to a module; the fourth may be cut by light modules.
    assert np.abs(corners - target)[[0, 1, 3]].max() < 8.0


def test_a_blank_crop_has_no_outline() -> None:
    assert rectify.outline(np.full((300, 300), 240, np.uint8)) is None


@pytest.mark.parametrize("index", [7])
def test_a_steep_photo_only_the_outline_reads_is_read(
    neural: Engine, without_variants, index: int
) -> None:  # type: ignore[no-untyped-def]
    sample = corpus_sample("perspective", index, seed=7)
    truth = {code.payload for code in sample.codes}
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == truth
    assert result.codes[0].variant == "outlined"
    assert without_variants(neural, LATE).scan(sample.data).codes == []


# Seed 11: seed 7's glare-6 is also read by the thorough pass's CLAHE around the
# detector's box, so it no longer shows that only this variant reads it.
@pytest.mark.parametrize("index", [56])
def test_a_glare_photo_only_clahe_with_the_local_binarizer_reads_is_read(
    neural: Engine, without_variants, index: int
) -> None:  # type: ignore[no-untyped-def]
    sample = corpus_sample("glare", index, seed=11)
    truth = {code.payload for code in sample.codes}
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == truth
    assert result.codes[0].variant == "rectified_clahe_local"
    assert without_variants(neural, LATE).scan(sample.data).codes == []


@pytest.mark.parametrize("index", [13])
def test_a_torn_photo_read_only_with_a_finder_redrawn_on_its_outline_is_read(
    neural: Engine, without_variants, index: int, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    sample = corpus_sample("damaged", index, seed=7)
    truth = {code.payload for code in sample.codes}
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == truth
    # The soft decoder reads it from the detector's box through the two surviving finders
    # (as the torn photo above), or the third found along a surviving finder's axes;
    # without those, from their outline; where those reads are off, the finder redrawn on
    # the code's outline does.
    assert result.codes[0].variant == "soft"
    monkeypatch.setattr(decoder, "_PAIR_TRIPLES", 0)
    assert neural.scan(sample.data).codes[0].variant == "soft"
    monkeypatch.setattr(decoder, "_ALONG_SEEDS", 0)
    assert neural.scan(sample.data).codes[0].variant == outlined.VARIANT
    monkeypatch.setattr(outlined, "BUDGET_UNITS", 0.0)
    assert neural.scan(sample.data).codes[0].variant == "outlined_finder"
    assert without_variants(neural, LATE).scan(sample.data).codes == []


def test_a_code_s_own_outline_is_read_as_it_is_deshaken_and_with_a_redrawn_finder() -> None:
    # The outlined crop (steep views, torn finders) gets the reads that read codes there, and
    # no Gaussian deconvolution: over the benchmark corpus and qr-photos-val that variant was
    # the first to read no code and the same codes were read without it, while a detection
    # nothing reads (a decoy, a code past reading) paid a Wiener filter and a zxing-cpp pass
    # for it, most of it on the pages over 150 ms of CPU (issue 19).
    outlined_reads = [v.name for v in detect.VARIANTS if v.cut is detect._outlined]
    assert outlined_reads == ["outlined", "outlined_deshake", "outlined_finder"]


def test_the_late_variants_stop_once_a_page_has_spent_its_budget(
    neural: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page of decoys or noise would pay the late variants' tens of milliseconds for each
    # of its detections: past LATE_BUDGET_UNITS per page and stage, the rest get the early
    # variants only. With no budget, a code only deconvolution reads stays unread.
    sample = corpus_sample("motion", 1, seed=7)
    truth = {code.payload for code in sample.codes}
    monkeypatch.setattr(detect, "LATE_BUDGET_UNITS", 0.0)
    assert neural.scan(sample.data).codes == []
    monkeypatch.undo()
    assert {code.data for code in neural.scan(sample.data).codes} == truth


def test_a_first_detector_s_weak_box_leaves_its_late_variants_to_the_refining_detector(
    neural: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The small model scores text columns, stamps and logos just over its threshold, and
    # each paid the late variants' tens of milliseconds there and again in the medium
    # model's look (issue 19's tail). A box under WEAK_SCORE gets the early variants and the
    # soft decoder; the medium model reads the place with every variant where it boxes it.
    sample = corpus_sample("motion", 1, seed=7)
    truth = {code.payload for code in sample.codes}
    read = neural.scan(sample.data).codes
    assert {code.data for code in read} == truth and read[0].stage == "detect_small"
    monkeypatch.setattr(detect, "WEAK_SCORE", 1.01)  # every box the small model makes weak
    read = neural.scan(sample.data).codes
    assert {code.data for code in read} == truth and read[0].stage == "detect_medium"
    # With no refining detector after it, a weak box gets every variant.
    alone = Engine(Settings(backend="onnx", detector_models=("small",)))
    read = alone.scan(sample.data).codes
    assert {code.data for code in read} == truth and read[0].stage == "detect_small"


def test_a_weak_box_the_refining_detector_boxes_too_gets_its_own_late_variants(
    neural: Engine,
) -> None:
    # glare-0021: the small model boxes the code at 0.39, the medium one at 0.51, and only
    # the small model's box, deshaken and read by the soft decoder, reads it (the medium
    # model's own crop of it does not). Its late variants wait for the medium model's look
    # and run where that model boxes the place too, labelled as the small model's.
    sample = corpus_sample("glare", 21)
    [code] = neural.scan(sample.data).codes
    assert code.data == sample.codes[0].payload
    assert (code.stage, code.variant) == ("detect_small", "box_deshake+soft")


def test_a_read_page_left_open_by_weak_boxes_alone_gets_the_medium_model_where_it_boxes_them(
    neural: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # damaged-0043: the fast pass reads the code, and the small model boxes a column of the
    # invoice's item lines at 0.31. That weak box is all that keeps the page open: the
    # medium model looks at it alone, boxes nothing there, and so spends no look on the
    # whole page (37 ms of inference, and the reads of what it boxes). The column stays
    # located and unread: nothing rules it out. lowres-0005: the medium model boxes the
    # small one's weak places, looks at the page, and reads two codes there.
    medium = next(s.detector for s in neural.stages if s.name == "detect_medium")  # type: ignore[attr-defined]
    whole_page_looks = []
    look = medium.detect

    def counted(gray: np.ndarray, *args: float) -> list:  # type: ignore[type-arg]
        whole_page_looks.append(gray.shape)
        return look(gray, *args)

    monkeypatch.setattr(medium, "detect", counted)
    sample = corpus_sample("damaged", 43)
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == {code.payload for code in sample.codes}
    assert whole_page_looks == []
    assert [(u.located_by, u.reason) for u in result.unread] == [("detector", "not_decoded")]
    sample = corpus_sample("lowres", 5)
    result = neural.scan(sample.data)
    assert {code.data for code in result.codes} == {code.payload for code in sample.codes}
    assert len(whole_page_looks) == 1
    assert [c.stage for c in result.codes].count("detect_medium") == 2
