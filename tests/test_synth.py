"""Behaviour of the synthetic invoice generator, models.synth.

Every decode check goes through zxing-cpp, the same reader the worker uses, so
these tests also pin down what "ground truth" means: exact payload bytes, and
symbol corners that agree with zxing's reported position.
"""

from __future__ import annotations

import base64
import io
import json
import random

import numpy as np
import pypdfium2 as pdfium
import pytest
import zxingcpp
from PIL import Image, ImageSequence

from models.synth import (
    FORMATS,
    MULTI_PAGE_FORMATS,
    PAYLOAD_KINDS,
    Sample,
    digital_invoice,
    make_payload,
    no_code_invoice,
    photo_invoice,
    render_code,
    sample_set,
)
from models.synth.__main__ import main as cli_main

QR_FORMATS = (zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode)
QUAD_TOLERANCE_PX = 3.0


def read_codes(image: np.ndarray, *, try_invert: bool = False) -> list[zxingcpp.Barcode]:
    return zxingcpp.read_barcodes(
        image, formats=QR_FORMATS, text_mode=zxingcpp.TextMode.Plain, try_invert=try_invert
    )


def decode_pages(sample: Sample) -> list[np.ndarray]:
    """Open the file the way a consumer would; PDFs are rendered at the sample's DPI."""
    if sample.fmt == "pdf":
        document = pdfium.PdfDocument(sample.data)
        return [
            np.asarray(page.render(scale=sample.dpi / 72, grayscale=True).to_pil().convert("L"))
            for page in document
        ]
    with Image.open(io.BytesIO(sample.data)) as image:
        return [np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(image)]


def zxing_quad(barcode: zxingcpp.Barcode) -> np.ndarray:
    p = barcode.position
    corners = (p.top_left, p.top_right, p.bottom_right, p.bottom_left)
    return np.array([(c.x, c.y) for c in corners], dtype=float)


def find(sample: Sample, *, try_invert: bool = False) -> list[zxingcpp.Barcode | None]:
    """For each ground-truth code, the barcode zxing read with the same bytes, if any."""
    pages = decode_pages(sample)
    results = [read_codes(page, try_invert=try_invert) for page in pages]
    return [
        next((b for b in results[code.page] if b.bytes == code.payload), None)
        for code in sample.codes
    ]


def quad_error(barcode: zxingcpp.Barcode, quad: tuple[tuple[float, float], ...]) -> float:
    return float(np.abs(zxing_quad(barcode) - np.array(quad)).max())


def assert_all_codes_decode(sample: Sample, *, try_invert: bool = False) -> None:
    """Each ground-truth code is read with its exact bytes, text, format and corners."""
    for code, barcode in zip(sample.codes, find(sample, try_invert=try_invert), strict=True):
        assert barcode is not None, f"{sample.name}: {code.payload[:40]!r} not decoded"
        assert barcode.format.name == code.format
        assert quad_error(barcode, code.quad) <= QUAD_TOLERANCE_PX
        if code.is_text:
            assert barcode.text == code.payload.decode("utf-8")


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_seed_gives_byte_identical_files(fmt: str) -> None:
    assert digital_invoice(11, fmt=fmt).data == digital_invoice(11, fmt=fmt).data


def test_photos_and_empty_pages_are_reproducible_too() -> None:
    assert photo_invoice(4).data == photo_invoice(4).data
    assert no_code_invoice(4, photo=True).data == no_code_invoice(4, photo=True).data


def test_different_seeds_give_different_invoices() -> None:
    first, second = digital_invoice(1), digital_invoice(2)
    assert first.data != second.data
    assert first.codes[0].payload != second.codes[0].payload
    assert photo_invoice(1).data != photo_invoice(2).data


def test_generation_never_touches_global_random_state() -> None:
    np_state, py_state = np.random.get_state(), random.getstate()
    digital_invoice(3)
    photo_invoice(3)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]


def test_sample_set_is_reproducible_with_unique_names() -> None:
    first = sample_set(8, 6, "mixed")
    second = sample_set(8, 6, "mixed")
    assert [s.data for s in first] == [s.data for s in second]
    assert len({s.name for s in first}) == 6
    assert {s.category for s in sample_set(1, 3, "photo")} == {"photo"}
    assert all(not s.codes for s in sample_set(1, 3, "none"))


# --- file formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_opens_with_the_recorded_size(fmt: str) -> None:
    sample = digital_invoice(21, fmt=fmt)
    (page,) = decode_pages(sample)
    # PDF page sizes are stored in points, so rendering may round up one pixel.
    assert abs(page.shape[0] - sample.height) <= 1
    assert abs(page.shape[1] - sample.width) <= 1
    assert sample.width * sample.height == pytest.approx(2.0e6, rel=0.01)


@pytest.mark.parametrize("fmt", sorted(MULTI_PAGE_FORMATS))
def test_multi_page_formats_hold_every_page(fmt: str) -> None:
    sample = digital_invoice(5, fmt=fmt, pages=3, n_codes=3, megapixels=1.0)
    pages = decode_pages(sample)
    assert sample.pages == len(pages) == 3
    assert {code.page for code in sample.codes} <= {0, 1, 2}
    assert_all_codes_decode(sample)


def test_pdf_page_size_follows_the_dpi_and_carries_no_timestamp() -> None:
    sample = digital_invoice(6, fmt="pdf", pages=2)
    width_pt, height_pt = pdfium.PdfDocument(sample.data)[0].get_size()
    assert width_pt == pytest.approx(sample.width * 72 / sample.dpi, abs=0.01)
    assert height_pt == pytest.approx(sample.height * 72 / sample.dpi, abs=0.01)
    assert b"CreationDate" not in sample.data
    assert b"ModDate" not in sample.data


def test_single_page_formats_refuse_several_pages() -> None:
    with pytest.raises(ValueError, match="single page"):
        digital_invoice(1, fmt="png", pages=2)


# --- payloads and decoding -------------------------------------------------------------------


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_digital_codes_decode_to_their_exact_payload(kind: str) -> None:
    for seed in range(3):
        sample = digital_invoice(seed, payload_kind=kind)
        assert sample.codes[0].is_text == (kind != "binary")
        assert_all_codes_decode(sample)


def test_payload_kinds_have_their_documented_shape() -> None:
    rng = np.random.default_rng(0)
    samples = {kind: [make_payload(rng, kind) for _ in range(30)] for kind in PAYLOAD_KINDS}
    assert all(p.data.isascii() for p in samples["tax_url"])
    assert all(p.data.count(b"|") >= 10 for p in samples["pipe_record"])
    assert max(len(p.data) for p in samples["pipe_record"]) > 400  # versions 15-25
    assert all(p.data[:4] in (b"BCD\n", b"SPC\n", b"SPC\r") for p in samples["newline_record"])
    assert all(not p.data.isascii() for p in samples["utf8"])
    assert all(not p.is_text for p in samples["binary"])
    assert any(b"\x00" in p.data and b"\xff" in p.data for p in samples["binary"])


def test_non_ascii_text_carries_a_utf8_eci_and_ascii_or_binary_do_not() -> None:
    def raw_stream(payload: bytes, is_text: bool) -> bytes:
        # HexECI shows the decoded stream as is, ECI designators included.
        image = render_code(payload, is_text).image
        (found,) = zxingcpp.read_barcodes(image, text_mode=zxingcpp.TextMode.HexECI)
        return bytes.fromhex(found.text.replace(" ", ""))

    utf8 = "Müller & Söhne GmbH · 1.234,56 €".encode()
    assert raw_stream(utf8, True) == b"]Q2\\000026" + utf8  # ECI 26 is UTF-8
    assert raw_stream(b"INV-2024-0042", True) == b"]Q1INV-2024-0042"
    binary = bytes([0, 255, 1, 128, 200, 7])
    assert raw_stream(binary, False) == b"]Q1" + binary


def test_micro_qr_refuses_non_ascii_text_rather_than_mangling_it() -> None:
    with pytest.raises(ValueError, match="ECI"):
        render_code("Zürich".encode(), True, micro=True)


def test_dense_symbols_of_versions_15_to_25_decode() -> None:
    sample = digital_invoice(2, payload_kind="pipe_record", min_version=25, n_codes=2)
    assert_all_codes_decode(sample)


def test_several_codes_on_one_page_all_decode() -> None:
    for seed in range(2):
        sample = digital_invoice(seed, n_codes=2 + seed, color=True)
        assert len(sample.codes) == 2 + seed
        assert len({code.quad for code in sample.codes}) == len(sample.codes)
        assert_all_codes_decode(sample)


def test_micro_qr_codes_decode() -> None:
    sample = digital_invoice(9, micro=True, n_codes=2)
    assert {code.format for code in sample.codes} == {"MicroQRCode"}
    assert_all_codes_decode(sample)


@pytest.mark.parametrize("rotate", [90, 180, 270, -8, 30])
def test_rotated_codes_decode_and_quads_follow_the_symbol(rotate: float) -> None:
    assert_all_codes_decode(digital_invoice(12, rotate=rotate, fmt="webp"))


def test_inverted_codes_need_try_invert() -> None:
    sample = digital_invoice(13, invert=True, rotate=90)
    (page,) = decode_pages(sample)
    assert not read_codes(page, try_invert=False)
    assert_all_codes_decode(sample, try_invert=True)


def test_no_code_invoices_contain_no_codes() -> None:
    for sample in (no_code_invoice(1), no_code_invoice(2, fmt="jpeg", photo=True)):
        assert sample.category == "none"
        assert not sample.codes
        (page,) = decode_pages(sample)
        assert not read_codes(page, try_invert=True)


# --- photos ----------------------------------------------------------------------------------


def test_mild_photos_mostly_decode_with_quads_that_follow_the_warp() -> None:
    found = []
    for seed in range(6):
        sample = photo_invoice(seed, strength=0.15)
        assert sample.fmt == "jpeg"
        for code, barcode in zip(sample.codes, find(sample), strict=True):
            found.append(barcode is not None)
            if barcode is not None:
                assert quad_error(barcode, code.quad) <= QUAD_TOLERANCE_PX
    assert sum(found) >= 5


def test_photo_codes_stay_inside_the_frame() -> None:
    names = ["perspective", "rotation", "downscale", "shadow", "glare", "jpeg"]
    for seed in range(4):
        sample = photo_invoice(seed, degradations=names, strength=0.6, n_codes=2, fmt="png")
        for code in sample.codes:
            quad = np.array(code.quad)
            assert (quad >= 0).all()
            assert (quad[:, 0] <= sample.width).all()
            assert (quad[:, 1] <= sample.height).all()


def test_unknown_degradations_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown degradation"):
        photo_invoice(1, degradations=["perspective", "sepia"])


def test_strong_photos_are_harder_than_mild_ones() -> None:
    def decoded(strength: float) -> int:
        hits = 0
        for seed in range(5):
            sample = photo_invoice(
                seed, strength=strength, degradations=["perspective", "downscale", "gaussian_blur"]
            )
            (page,) = decode_pages(sample)
            hits += any(b.bytes == sample.codes[0].payload for b in read_codes(page))
        return hits

    assert decoded(1.0) < decoded(0.1) == 5


# --- command line ----------------------------------------------------------------------------


def test_cli_writes_files_ground_truth_and_expected_text(tmp_path) -> None:
    assert cli_main([str(tmp_path), "--seed", "2", "--count", "4", "--kind", "digital"]) == 0
    truths = sorted(tmp_path.glob("*.json"))
    assert len(truths) == 4
    for path in truths:
        truth = json.loads(path.read_text(encoding="utf-8"))
        files = [
            p for p in tmp_path.glob(f"{truth['name']}.*") if p.suffix not in (".json", ".txt")
        ]
        assert len(files) == 1
        codes = truth["codes"]
        for code in codes:
            payload = base64.b64decode(code["payload_base64"])
            assert code.get("text", None) == (payload.decode() if code["is_text"] else None)
            assert len(code["quad"]) == 4
        txt = path.with_suffix(".txt")
        if len(codes) == 1 and codes[0]["is_text"]:
            assert txt.read_bytes() == base64.b64decode(codes[0]["payload_base64"])
        else:
            assert not txt.exists()
    assert list(tmp_path.glob("*.txt"))
