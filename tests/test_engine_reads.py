"""What the engine reads: every input format, several codes, rotations, inversions, payloads."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from models.synth import digital_invoice, photo_invoice
from models.synth.samples import Sample
from worker.engine import Engine, ScanResult
from worker.settings import Settings


def read_payloads(result: ScanResult) -> set[tuple[int, bytes]]:
    return {(code.page, code.data) for code in result.codes}


def truth(sample: Sample) -> set[tuple[int, bytes]]:
    return {(code.page, code.payload) for code in sample.codes}


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "bmp", "gif", "tiff", "pdf"])
def test_every_supported_format_is_read(engine: Engine, fmt: str) -> None:
    sample = digital_invoice(11, fmt=fmt)
    result = engine.scan(sample.data)
    assert result.ok, result.error
    assert result.format == fmt
    assert read_payloads(result) == truth(sample)


@pytest.mark.parametrize("fmt", ["tiff", "pdf"])
def test_every_page_of_a_multi_page_document_is_read(engine: Engine, fmt: str) -> None:
    sample = digital_invoice(12, fmt=fmt, pages=3, n_codes=3)
    result = engine.scan(sample.data)
    assert result.pages == 3
    # Pages are numbered from 0 and every code carries its own: (page, payload) pairs match.
    assert read_payloads(result) == truth(sample)


def test_two_codes_on_one_page_are_both_listed(engine: Engine) -> None:
    sample = digital_invoice(13, n_codes=2)
    result = engine.scan(sample.data)
    assert len(result.codes) == 2
    assert read_payloads(result) == truth(sample)


def test_want_first_stops_at_one_code(engine: Engine) -> None:
    sample = digital_invoice(13, n_codes=2)
    assert len(engine.scan(sample.data, want="first").codes) == 1


@pytest.mark.parametrize("rotate", [90, 180, 270, 15])
def test_rotated_codes_are_read(engine: Engine, rotate: int) -> None:
    sample = digital_invoice(14, rotate=rotate)
    assert read_payloads(engine.scan(sample.data)) == truth(sample)


def test_inverted_light_on_dark_codes_are_read(engine: Engine) -> None:
    sample = digital_invoice(15, invert=True)
    assert read_payloads(engine.scan(sample.data)) == truth(sample)


def test_micro_qr_is_read_and_named(engine: Engine) -> None:
    sample = digital_invoice(16, micro=True)
    result = engine.scan(sample.data)
    assert read_payloads(result) == truth(sample)
    assert result.codes[0].format == "MicroQRCode"


def test_binary_payload_comes_back_byte_exact(engine: Engine) -> None:
    sample = digital_invoice(17, payload_kind="binary")
    code = engine.scan(sample.data).codes[0]
    assert code.data == sample.codes[0].payload
    assert base64.b64decode(code.to_dict()["bytes_b64"]) == sample.codes[0].payload


def test_utf8_text_is_decoded_by_its_eci_without_escaping(engine: Engine) -> None:
    sample = digital_invoice(18, payload_kind="utf8")
    code = engine.scan(sample.data).codes[0]
    assert code.text == sample.codes[0].payload.decode("utf-8")
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in code.text)


def test_shift_jis_text_is_decoded_as_shift_jis(engine: Engine) -> None:
    import segno

    text = "請求書番号 ２０２６"  # noqa: RUF001 (full-width digits are the point)
    symbol = segno.make_qr(text.encode("shift_jis"), error="m", mode="byte")
    matrix = np.array(symbol.matrix, np.uint8)
    image = np.kron(1 - matrix, np.ones((6, 6), np.uint8)) * 255
    image = cv2.copyMakeBorder(image, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255)
    code = engine.scan(image).codes[0]
    assert code.text == text


def test_quads_are_in_the_original_pixel_grid(engine: Engine) -> None:
    # A JPEG is read at reduced size by the fast pass; corners must still be full-size ones.
    sample = digital_invoice(19, fmt="jpeg", megapixels=4.0)
    result = engine.scan(sample.data)
    assert result.codes[0].variant == "reduced"
    got = np.array(result.codes[0].quad)
    want = np.array(sample.codes[0].quad)
    assert np.abs(got - want).max() < 6.0


def test_arrays_are_accepted_in_gray_bgr_and_bgra(engine: Engine) -> None:
    sample = digital_invoice(20, fmt="png")
    bgr = cv2.imdecode(np.frombuffer(sample.data, np.uint8), cv2.IMREAD_COLOR)
    for image in (
        bgr,
        cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
        cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
    ):
        assert read_payloads(engine.scan(image)) == truth(sample)


def test_a_code_on_a_transparent_background_lands_on_white(engine: Engine) -> None:
    sample = digital_invoice(21, fmt="png")
    gray = cv2.imdecode(np.frombuffer(sample.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    # Black ink, everything else fully transparent black: flattening onto black would erase it.
    rgba = np.zeros((*gray.shape, 4), np.uint8)
    rgba[:, :, 3] = 255 - gray
    png = cv2.imencode(".png", rgba)[1].tobytes()
    assert read_payloads(engine.scan(png)) == truth(sample)


def test_a_blurred_photo_is_read_by_the_thorough_stage() -> None:
    # The classical cascade alone: with the detector, it usually reads these first.
    engine = Engine(Settings(backend="none"))
    hits = []
    for seed in range(40):
        sample = photo_invoice(seed)
        result = engine.scan(sample.data)
        if any(code.stage == "thorough" for code in result.codes):
            hits.append(read_payloads(result) == truth(sample))
        if len(hits) == 3:
            break
    assert hits and all(hits)


def test_each_code_says_which_stage_and_decoder_read_it(engine: Engine) -> None:
    code = engine.scan(digital_invoice(22).data).codes[0].to_dict()
    assert code["stage"] == "fast"
    assert code["decoder"].startswith("zxing-cpp ")
    assert len(code["quad"]) == 4


def test_the_fast_stage_alone_reads_clean_digital_invoices(engine: Engine) -> None:
    result = engine.scan(digital_invoice(23, fmt="jpeg").data)
    assert result.stages_run == ["fast"]
    assert set(result.timings_ms) >= {"read", "decode_image", "fast", "total"}
    assert "thorough" not in result.timings_ms


def test_a_page_without_a_code_is_an_empty_success(engine: Engine) -> None:
    from models.synth import no_code_invoice

    result = engine.scan(no_code_invoice(24).data)
    assert result.ok and result.codes == []
    # Every stage ran before the cascade gave up: nothing was there to read.
    assert result.stages_run == ["fast", "detect_small", "detect_medium", "thorough", "zoom"]
    assert result.to_dict()["error"] is None


def test_the_same_code_printed_twice_is_listed_at_both_places(engine: Engine) -> None:
    import segno

    matrix = np.array(segno.make_qr("https://pay.example/i/42", error="m").matrix, np.uint8)
    symbol = np.kron(1 - matrix, np.ones((5, 5), np.uint8)) * 255
    page = np.full((900, 900), 255, np.uint8)
    height, width = symbol.shape
    page[100 : 100 + height, 100 : 100 + width] = symbol
    page[600 : 600 + height, 550 : 550 + width] = symbol
    codes = engine.scan(page).codes
    assert [c.text for c in codes] == ["https://pay.example/i/42"] * 2
    assert {round(c.quad[0][1], -2) for c in codes} == {100.0, 600.0}


def test_texture_on_a_blurred_photo_is_not_read_as_a_micro_qr(engine: Engine) -> None:
    # Found by `qrw bench`: adaptive thresholding turned blur into an M1 Micro QR "268900".
    from models.synth.corpus import corpus_sample

    sample = corpus_sample("blurred", 6)
    result = engine.scan(sample.data)
    assert all(code.data in {c.payload for c in sample.codes} for code in result.codes)
