"""The PDF generator (models/synth/pdfs.py): born-digital invoices whose text is text and
whose codes are vectors, scanned invoices whose pages are one embedded image, and ground
truth that holds for the page rendered at the sample's DPI."""

from __future__ import annotations

import json

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
import zxingcpp

from models.synth.__main__ import main as cli_main
from models.synth.pdfs import (
    born_digital_pdf,
    pdf_set,
    scanned_from_sample,
    scanned_pdf,
)
from models.synth.samples import Sample, photo_invoice


def _objects(page: pdfium.PdfPage) -> list[int]:
    return [obj.type for obj in page.get_objects(max_depth=0)]


def _reads_as_truth(sample: Sample) -> None:
    """Every ground-truth code is read from the page rendered at the sample's DPI, with its
    corners within 4 pixels of the truth."""
    pdf = pdfium.PdfDocument(sample.data)
    for code in sample.codes:
        image = pdf[code.page].render(scale=sample.dpi / 72.0, grayscale=True).to_numpy()
        gray = image if image.ndim == 2 else image[..., 0]
        reads = [r for r in zxingcpp.read_barcodes(gray) if r.bytes == code.payload]
        assert reads, f"{sample.name}: the code on page {code.page} does not read"
        p = reads[0].position
        corners = [p.top_left, p.top_right, p.bottom_right, p.bottom_left]
        got = np.array([[c.x, c.y] for c in corners], dtype=float)
        assert np.abs(got - np.array(code.quad)).max() <= 4.0


def test_a_born_digital_invoice_has_text_as_text_and_its_code_as_vector_paths() -> None:
    sample = born_digital_pdf(11, pages=1)
    page = pdfium.PdfDocument(sample.data)[0]
    kinds = _objects(page)
    assert pdfium_c.FPDF_PAGEOBJ_TEXT in kinds
    assert pdfium_c.FPDF_PAGEOBJ_PATH in kinds
    assert pdfium_c.FPDF_PAGEOBJ_IMAGE not in kinds
    assert "Total" in page.get_textpage().get_text_bounded()
    _reads_as_truth(sample)


def test_codes_go_on_the_pages_asked_for_and_read_where_the_truth_says() -> None:
    sample = born_digital_pdf(12, pages=3, code_pages=(1, 2), codes_per_page=2, angle=90.0)
    assert sample.pages == 3
    assert sorted(code.page for code in sample.codes) == [1, 1, 2, 2]
    _reads_as_truth(sample)


@pytest.mark.parametrize(
    "options",
    [
        {"code_as": "image"},
        {"angle": 7.0, "invert": True},
        {"side_mm": 10.0, "payload_kind": "tax_url"},
    ],
)
def test_image_codes_turned_and_inverted_codes_and_1_cm_codes_read_as_the_truth_says(
    options: dict[str, object],
) -> None:
    sample = born_digital_pdf(13, **options)  # type: ignore[arg-type]
    _reads_as_truth(sample)


def test_a_1_cm_code_is_1_cm_wide_on_the_page() -> None:
    sample = born_digital_pdf(14, side_mm=10.0, payload_kind="tax_url")
    (code,) = sample.codes
    side_px = code.quad[1][0] - code.quad[0][0]
    assert side_px == pytest.approx(10.0 / 25.4 * sample.dpi, rel=1e-3)


@pytest.mark.parametrize(
    ("encoding", "filters"),
    [("jpeg", ["DCTDecode"]), ("ccitt", ["CCITTFaxDecode"]), ("bitonal", ["FlateDecode"])],
)
def test_a_scanned_page_is_one_image_covering_the_page_at_its_dpi(
    encoding: str, filters: list[str]
) -> None:
    sample = scanned_pdf(21, pages=2, code_pages=(1,), dpi=200.0, encoding=encoding)
    pdf = pdfium.PdfDocument(sample.data)
    for page in pdf:
        (image,) = list(page.get_objects(max_depth=0))
        assert image.type == pdfium_c.FPDF_PAGEOBJ_IMAGE
        assert image.get_filters() == filters
        width_px, _ = image.get_px_size()
        left, _, right, _ = image.get_bounds()
        assert right - left == pytest.approx(page.get_width())
        assert width_px / (page.get_width() / 72.0) == pytest.approx(200.0, rel=1e-3)
    assert [code.page for code in sample.codes] == [1]
    # Paper is white: a bitonal scan's polarity is right, not a negative zxing inverts.
    assert pdf[0].render(scale=0.5, grayscale=True).to_numpy().mean() > 200
    _reads_as_truth(sample)


def test_a_photo_sample_wrapped_as_a_scan_keeps_its_jpeg_bytes() -> None:
    photo = photo_invoice(31, strength=0.1)
    wrapped = scanned_from_sample(photo, dpi=250.0)
    (image,) = list(pdfium.PdfDocument(wrapped.data)[0].get_objects(max_depth=0))
    assert bytes(image.get_data()) == photo.data
    assert [c.payload for c in wrapped.codes] == [c.payload for c in photo.codes]
    factor = 200.0 / 250.0
    assert np.allclose(np.array(wrapped.codes[0].quad), np.array(photo.codes[0].quad) * factor)
    _reads_as_truth(wrapped)


def test_the_same_arguments_give_the_same_bytes() -> None:
    assert born_digital_pdf(41, pages=2).data == born_digital_pdf(41, pages=2).data
    assert scanned_pdf(41, encoding="ccitt").data == scanned_pdf(41, encoding="ccitt").data


def test_a_set_spreads_codes_over_first_middle_and_last_pages() -> None:
    samples = pdf_set(0, 40, "pdf_digital")
    pages = [s.pages for s in samples]
    assert {1, 2, 3} <= set(pages)
    placements = {(s.pages, c.page) for s in samples for c in s.codes}
    assert (3, 0) in placements and (3, 1) in placements and (3, 2) in placements
    assert any(len({c.page for c in s.codes}) == 2 for s in samples)


def test_the_command_line_writes_pdf_kinds_with_their_truth(tmp_path) -> None:
    assert cli_main([str(tmp_path), "--kind", "pdf_scanned", "--count", "2"]) == 0
    truths = sorted(tmp_path.glob("*.json"))
    assert len(truths) == 2
    for truth in truths:
        data = json.loads(truth.read_text())
        assert data["format"] == "pdf"
        assert truth.with_suffix(".pdf").read_bytes().startswith(b"%PDF-")
