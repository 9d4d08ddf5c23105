"""PDF pages by kind (worker/engine/pdf_pages.py, issue 22): a born-digital page is rendered
and stopped early when it shows no code; a scanned page is read from its own image at its own
resolution, through the path an image file takes; anything else is rendered and read by the
whole cascade. The kind comes from the page objects, in the PDF child as in-process."""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image

from models.synth.corpus import corpus_sample
from models.synth.pdfs import born_digital_pdf, pdf_set, scanned_from_sample, scanned_pdf
from models.synth.samples import Sample, digital_invoice, photo_invoice
from worker.engine import Engine
from worker.engine.deadline import Deadline
from worker.engine.engine import default_stages
from worker.engine.errors import ErrorCode
from worker.engine.images import Document, jpeg_shape, open_document
from worker.engine.pdf_pages import BORN_DIGITAL, MIXED, SCANNED
from worker.engine.results import ScanResult
from worker.settings import Settings

# Quads are exact to the pixel on clean pages; scans add the module edge's blur.
_QUAD_SLACK_PX = 6.0


@pytest.fixture(scope="module", params=[True, False], ids=["child", "in_process"])
def settings(request: pytest.FixtureRequest) -> Settings:
    return Settings.from_env({}, pdf_child=request.param)


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Engine:
    engine = Engine(settings)
    engine.warm_up()
    return engine


def _kinds(data: bytes, settings: Settings) -> list[str | None]:
    return [page.kind for page in open_document(data, settings).pages]


def _matches(result: ScanResult, sample: Sample) -> None:
    """Every code of the truth read once, on its page, at its place; nothing else read."""
    assert result.ok, result.error
    assert sorted((c.page, c.data) for c in result.codes) == sorted(
        (t.page, t.payload) for t in sample.codes
    )
    for truth in sample.codes:
        (code,) = [c for c in result.codes if c.data == truth.payload and c.page == truth.page]
        assert np.abs(np.array(code.quad) - np.array(truth.quad)).max() <= _QUAD_SLACK_PX


def _with_rectangle(data: bytes, box: tuple[float, float, float, float]) -> bytes:
    """The PDF with a filled rectangle (x, y, w, h in points) drawn over its first page."""
    pdf = pdfium.PdfDocument(data)
    page = pdf[0]
    rect = pdfium_c.FPDFPageObj_CreateNewRect(*box)
    pdfium_c.FPDFPath_SetDrawMode(rect, pdfium_c.FPDF_FILLMODE_ALTERNATE, False)
    pdfium_c.FPDFPage_InsertObject(page, rect)
    pdfium_c.FPDFPage_GenerateContent(page)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def _with_photo(data: bytes, jpeg: bytes, share: float) -> bytes:
    """The PDF with a JPEG photo drawn over `share` of its first page's width, full height
    of that proportion."""
    pdf = pdfium.PdfDocument(data)
    page = pdf[0]
    image = pdfium.PdfImage.new(pdf)
    image.load_jpeg(io.BytesIO(jpeg), pages=[page], inline=True)
    width, height = page.get_width() * share, page.get_height() * share
    image.set_matrix(pdfium.PdfMatrix().scale(width, height).translate(20, 20))
    page.insert_obj(image)
    page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


# --------------------------------------------------------------------------- classification


def test_born_digital_pages_are_classified_from_their_objects(settings: Settings) -> None:
    vector = born_digital_pdf(101, pages=3, code_pages=(1,))
    as_image = born_digital_pdf(102, code_as="image")
    assert _kinds(vector.data, settings) == [BORN_DIGITAL] * 3
    assert _kinds(as_image.data, settings) == [BORN_DIGITAL]


@pytest.mark.parametrize("encoding", ["jpeg", "ccitt", "bitonal", "gray"])
def test_scanned_pages_are_classified_from_their_objects(settings: Settings, encoding: str) -> None:
    sample = scanned_pdf(103, pages=2, code_pages=(0,), dpi=200.0, encoding=encoding)
    assert _kinds(sample.data, settings) == [SCANNED, SCANNED]


@pytest.mark.parametrize("category", ["blurred", "perspective", "glare", "low_contrast", "lowres"])
def test_a_photographed_page_is_never_classified_born_digital(
    settings: Settings, category: str
) -> None:
    # The early stop is for born-digital pages only: a hard photo must keep every stage.
    for index in range(2):
        photo = corpus_sample(category, index)
        wrapped = scanned_from_sample(photo, dpi=250.0)
        assert _kinds(wrapped.data, settings) == [SCANNED]


def test_a_scan_with_something_drawn_over_it_is_mixed(settings: Settings) -> None:
    sample = scanned_pdf(104, dpi=200.0)
    stamped = _with_rectangle(sample.data, (100, 100, 50, 20))
    assert _kinds(stamped, settings) == [MIXED]


def test_a_digital_page_with_a_large_photo_is_mixed_not_born_digital(settings: Settings) -> None:
    photo = corpus_sample("blurred", 0)
    assert photo.fmt == "jpeg"
    page = born_digital_pdf(105)
    assert _kinds(_with_photo(page.data, photo.data, 0.6), settings) == [MIXED]
    # A logo-sized picture leaves it born-digital.
    assert _kinds(_with_photo(page.data, photo.data, 0.2), settings) == [BORN_DIGITAL]


# --------------------------------------------------------------------------- native resolution


def test_a_scanned_jpeg_page_is_its_jpeg_decoded_by_libjpeg(settings: Settings) -> None:
    sample = scanned_pdf(106, dpi=300.0, encoding="jpeg")
    raw = bytes(next(pdfium.PdfDocument(sample.data)[0].get_objects()).get_data())
    as_file = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
    (page,) = open_document(sample.data, settings).pages
    assert page.native == (as_file.shape[1], as_file.shape[0])
    # The page's grid is the page at QRW_PDF_DPI; the image has 1.5x its pixels a side.
    assert abs(page.width - sample.width) <= 1 and abs(page.height - sample.height) <= 1
    # The fast pass gets what the file's gets: libjpeg's DCT scaling to the largest scale
    # within the fast side (a quarter here, 877 pixels: half would be 1754), nothing more.
    reduced, _ = page.gray(settings.fast_max_side)
    quarter = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    assert max(quarter.shape) <= settings.fast_max_side < 2 * max(quarter.shape)
    assert np.array_equal(reduced, quarter)
    full, scale = page.gray(None)
    assert np.array_equal(full, as_file)
    assert scale == pytest.approx(300.0 / 200.0, rel=2e-3)


def test_a_bitonal_scan_is_read_pixel_for_pixel(settings: Settings) -> None:
    sample = scanned_pdf(107, dpi=300.0, encoding="ccitt")
    image = next(pdfium.PdfDocument(sample.data)[0].get_objects())
    (page,) = open_document(sample.data, settings).pages
    assert page.native == image.get_px_size()
    full, _ = page.gray(None)
    assert full.shape[::-1] == image.get_px_size()
    # One image pixel a bitmap pixel: nothing resampled, so nothing but black and white.
    assert set(np.unique(full).tolist()) <= {0, 255}


@pytest.mark.parametrize(
    ("encoding", "dpi"), [("jpeg", 300.0), ("ccitt", 200.0), ("gray", 240.0), ("bitonal", 300.0)]
)
def test_codes_on_scanned_pages_are_read_with_quads_on_the_page_grid(
    engine: Engine, encoding: str, dpi: float
) -> None:
    sample = scanned_pdf(108, pages=3, code_pages=(0, 2), dpi=dpi, encoding=encoding)
    result = engine.scan(sample.data, deadline_ms=0)
    _matches(result, sample)
    assert abs(result.width - sample.width) <= 1 and abs(result.height - sample.height) <= 1


def test_a_photo_as_a_scanned_pdf_reads_as_the_photo_does(engine: Engine) -> None:
    photo = corpus_sample("perspective", 3)
    wrapped = scanned_from_sample(photo, dpi=300.0)
    as_file = engine.scan(photo.data, deadline_ms=0)
    as_pdf = engine.scan(wrapped.data, deadline_ms=0)
    assert [c.data for c in as_pdf.codes] == [c.data for c in as_file.codes]
    factor = 200.0 / 300.0
    for from_pdf, from_file in zip(as_pdf.codes, as_file.codes, strict=True):
        assert np.allclose(np.array(from_pdf.quad), np.array(from_file.quad) * factor, atol=1.0)


def test_a_scan_placed_with_margins_is_rendered_and_still_read(engine: Engine) -> None:
    # Not filling the page, the image's grid is not the page's: the page is rendered.
    sample = scanned_from_sample(photo_invoice(115, strength=0.1), dpi=200.0)
    pdf = pdfium.PdfDocument(sample.data)
    page = pdf[0]
    image = next(page.get_objects())
    image.transform(pdfium.PdfMatrix().scale(0.96, 0.96).translate(10, 12))
    page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    (opened,) = open_document(out.getvalue(), engine.settings).pages
    assert opened.kind == SCANNED and opened.native is None
    result = engine.scan(out.getvalue(), deadline_ms=0)
    assert [c.data for c in result.codes] == [c.payload for c in sample.codes]


# --------------------------------------------------------------------------- limits


def _refusal(engine: Engine, data: bytes) -> tuple[ErrorCode, str]:
    result = engine.scan(data, deadline_ms=0)
    assert result.error is not None
    return result.error.code, result.error.message


@pytest.mark.parametrize("encoding", ["jpeg", "ccitt"])
def test_an_image_too_large_for_the_page_budget_is_refused_as_a_file_would_be(
    settings: Settings, encoding: str
) -> None:
    small = dataclasses.replace(settings, max_pixels=4_000_000)
    engine = Engine(small, stages=[])
    sample = scanned_pdf(109, dpi=300.0, encoding=encoding)  # about 8.7 MP
    code, message = _refusal(engine, sample.data)
    assert code == ErrorCode.IMAGE_TOO_LARGE
    assert "the image of PDF page 1" in message and "QRW_MAX_PIXELS" in message


def test_a_progressive_jpeg_over_the_scan_pixel_limit_is_refused_as_a_file_would_be(
    settings: Settings,
) -> None:
    ramp = np.linspace(0, 255, 4000, dtype=np.float32)
    pixels = np.stack([np.tile(ramp, (3000, 1))] * 3, axis=2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", progressive=True, quality=90, subsampling=0)
    jpeg = buffer.getvalue()
    limit = 100_000_000
    assert jpeg_shape(jpeg).scan_pixels > limit
    photo = Sample("progressive", jpeg, "jpeg", 1, 4000, 3000, (), "photo", 300.0)
    wrapped = scanned_from_sample(photo, dpi=300.0)
    strict = Engine(dataclasses.replace(settings, max_jpeg_scan_pixels=limit), stages=[])
    file_code, _ = _refusal(strict, jpeg)
    code, message = _refusal(strict, wrapped.data)
    assert code == file_code == ErrorCode.IMAGE_TOO_LARGE
    assert "QRW_MAX_JPEG_SCAN_PIXELS" in message


# --------------------------------------------------------------------------- both paths agree


def test_the_child_and_the_in_process_path_give_the_same_results() -> None:
    samples = [
        born_digital_pdf(110, pages=3, code_pages=(0, 2)),
        born_digital_pdf(111, code_as="image"),
        scanned_pdf(112, pages=2, code_pages=(1,), encoding="ccitt", dpi=200.0),
        scanned_pdf(113, encoding="jpeg", dpi=300.0),
    ]
    results = []
    for child in (True, False):
        engine = Engine(Settings.from_env({}, pdf_child=child))
        scans = [engine.scan(s.data, deadline_ms=0).to_dict() for s in samples]
        for scan in scans:
            scan.pop("timings_ms")
        results.append(scans)
        kinds = [_kinds(s.data, engine.settings) for s in samples]
        results.append(kinds)
    assert results[0] == results[2]
    assert results[1] == results[3]


# --------------------------------------------------------------------------- born-digital pages


def _scan_document(engine: Engine, data: bytes) -> tuple[ScanResult, Document]:
    """A scan through the engine's own stages, keeping the document to see what it decoded."""
    document = open_document(data, engine.settings)
    result = ScanResult()
    engine._run_stages(document, Deadline(0), "all", result)
    return result, document


def test_a_born_digital_page_without_a_code_is_settled_at_the_fast_resolution(
    engine: Engine,
) -> None:
    sample = born_digital_pdf(120, pages=3, code_pages=(1,))
    result, document = _scan_document(engine, sample.data)
    assert [(c.page, c.data) for c in result.codes] == [(1, sample.codes[0].payload)]
    assert result.complete and not result.unread
    # Each page rendered once at the fast pass's resolution, and never whole at QRW_PDF_DPI:
    # what else was decoded is regions a detector boxed (the payment slip's text), rendered
    # alone and found to hold no code.
    fast = sum(page.gray(engine.settings.fast_max_side)[0].size for page in document.pages)
    assert all(None not in page._cache for page in document.pages)
    page_at_pdf_dpi = sample.width * sample.height
    assert document.decoded_pixels - fast < page_at_pdf_dpi


def test_a_vector_code_too_fine_for_the_fast_render_is_read_from_its_region_alone(
    engine: Engine,
) -> None:
    # A long record in a 1 cm code: about 0.18 mm a module, under a pixel at the fast
    # resolution and under 1.5 at QRW_PDF_DPI.
    sample = born_digital_pdf(
        121, pages=2, code_pages=(1,), side_mm=10.0, payload_kind="pipe_record"
    )
    result, document = _scan_document(engine, sample.data)
    assert [c.data for c in result.codes] == [sample.codes[0].payload]
    (code,) = result.codes
    # zxing on the region, or our soft decoder on it: either way from the region's render.
    assert code.variant in ("vector_region", "reduced+soft", "vector_region+soft")
    assert np.abs(np.array(code.quad) - np.array(sample.codes[0].quad)).max() <= _QUAD_SLACK_PX
    # The region only: far fewer pixels than one page at QRW_PDF_DPI (3.9 MP).
    fast = sum(page.gray(engine.settings.fast_max_side)[0].size for page in document.pages)
    assert document.decoded_pixels - fast < 2_000_000


def _hard_born_digital() -> list[Sample]:
    return [
        born_digital_pdf(130, side_mm=10.0, payload_kind="tax_url"),
        born_digital_pdf(131, side_mm=10.0, payload_kind="pipe_record", pages=2, code_pages=(1,)),
        born_digital_pdf(132, min_version=22),
        born_digital_pdf(133, codes_per_page=4),
        born_digital_pdf(134, code_as="image", pages=3, code_pages=(0, 2)),
        born_digital_pdf(135, angle=33.0, invert=True),
        born_digital_pdf(136, pages=3, code_pages=()),
        # A 12 mm code turned 136 degrees: under 1.2 pixels a module at the fast resolution,
        # neither located nor a square block of texture (it fills half its bounding box).
        born_digital_pdf(608, side_mm=12.0, payload_kind="newline_record", angle=136.0),
        # Two 1 cm codes on one page, the detectors boxing one: the other shows only as
        # texture, and is read after the first.
        pdf_set(77, 29, "pdf_digital")[28],
        *pdf_set(22, 8, "pdf_digital"),
    ]


def test_the_born_digital_rules_lose_no_code_and_read_nothing_false() -> None:
    settings = Settings.from_env({})
    with_rules = Engine(settings)
    without = Engine(settings, stages=default_stages(settings, born_digital_rules=False))
    for sample in _hard_born_digital():
        truth = sorted((c.page, c.payload) for c in sample.codes)
        ruled = with_rules.scan(sample.data, deadline_ms=0)
        plain = without.scan(sample.data, deadline_ms=0)
        assert sorted((c.page, c.data) for c in ruled.codes) == truth, sample.name
        assert set((c.page, c.data) for c in plain.codes) <= set(truth), sample.name
        assert ruled.complete, sample.name
        assert set(ruled.page_kinds) == {BORN_DIGITAL}


def test_a_scanned_photo_page_keeps_every_stage(engine: Engine) -> None:
    # The early stop never applies to a scan: a photo with no code the fast pass could read
    # still gets the detectors and the thorough pass, as the same photo as a file does.
    photo = corpus_sample("none", 2)
    assert not photo.codes and photo.fmt != "pdf"
    result = engine.scan(scanned_from_sample(photo, dpi=300.0).data, deadline_ms=0)
    assert result.page_kinds == [SCANNED]
    assert result.stages_run == engine.scan(photo.data, deadline_ms=0).stages_run
    assert "thorough" in result.stages_run
    assert result.codes == []


def test_each_page_kind_is_in_the_result_and_counted_in_the_metrics(engine: Engine) -> None:
    from prometheus_client import generate_latest

    from worker import metrics

    sample = scanned_pdf(140, pages=2, code_pages=(0,), encoding="ccitt", dpi=200.0)
    result = engine.scan(sample.data, deadline_ms=0)
    assert result.page_kinds == [SCANNED, SCANNED]
    assert result.to_dict()["page_kinds"] == [SCANNED, SCANNED]
    source = f"pdf-kinds-child-{engine.settings.pdf_child}"
    metrics.observe_scan(result.to_dict(), source)
    text = generate_latest().decode()
    assert f'qrw_pdf_pages_total{{kind="scanned",source="{source}"}} 2.0' in text
    assert engine.scan(born_digital_pdf(141).data).page_kinds == [BORN_DIGITAL]
    assert engine.scan(photo_invoice(142).data).page_kinds == []


def test_a_scanned_page_reads_the_small_codes_its_render_read(engine: Engine) -> None:
    # A page Pillow embeds as a 144 DPI JPEG with three Micro QR codes: DCT-scaled to half
    # (841 pixels), as the JPEG file is, the fast pass reads none of them; the page rendered
    # at the fast side (1280) read all three. Their texture at half sends each region to a
    # full-size read, in the file's path (tests/test_images_small_codes.py) as in the scan's.
    sample = digital_invoice(2002952723, fmt="pdf", megapixels=2.0, n_codes=3, micro=True)
    result = engine.scan(sample.data, deadline_ms=0)
    assert result.page_kinds == [SCANNED]
    # Its truth is at its own 144 DPI; quads come on the page's grid at QRW_PDF_DPI.
    factor = engine.settings.pdf_dpi / sample.dpi
    at_grid = [
        dataclasses.replace(c, quad=tuple((x * factor, y * factor) for x, y in c.quad))
        for c in sample.codes
    ]
    _matches(result, dataclasses.replace(sample, codes=tuple(at_grid)))


def test_a_scan_coarser_than_the_page_grid_reads_as_its_file(engine: Engine) -> None:
    # A 100 DPI scan of about 1,060 pixels: the fast pass gets it whole, as its file's does, though
    # the page's grid at QRW_PDF_DPI is twice as long: not "reduced", and no full-size look
    # at texture blocks the whole image already showed.
    invoice = digital_invoice(150, fmt="jpeg", megapixels=0.8)
    wrapped = scanned_from_sample(invoice, dpi=100.0)
    as_file = engine.scan(invoice.data, deadline_ms=0)
    as_pdf = engine.scan(wrapped.data, deadline_ms=0)
    assert as_pdf.page_kinds == [SCANNED]
    assert (
        [(c.data, c.stage, c.variant) for c in as_pdf.codes]
        == [(c.data, c.stage, c.variant) for c in as_file.codes]
        == [(c.payload, "fast", "full") for c in invoice.codes]
    )
    factor = engine.settings.pdf_dpi / 100.0
    for from_pdf, from_file in zip(as_pdf.codes, as_file.codes, strict=True):
        assert np.allclose(np.array(from_pdf.quad), np.array(from_file.quad) * factor, atol=2.0)
