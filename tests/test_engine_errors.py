"""Bad input gets a clear, stable error code and never an exception or a crash."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from models.synth import digital_invoice, no_code_invoice
from worker.bench.hostile_files import png_bomb
from worker.engine import Engine, ErrorCode
from worker.settings import Settings


def error_of(engine: Engine, data: object) -> str:
    result = engine.scan(data)  # type: ignore[arg-type]
    assert not result.ok and result.codes == []
    assert result.error is not None and result.error.message
    return result.error.code


def test_empty_input(engine: Engine) -> None:
    assert error_of(engine, b"") == ErrorCode.EMPTY_INPUT
    assert error_of(engine, np.zeros((0, 0), np.uint8)) == ErrorCode.EMPTY_INPUT


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file\n", b"PK\x03\x04 a zip archive", b"\x00" * 64, b"<svg></svg>"],
)
def test_files_that_are_not_images_are_unsupported(engine: Engine, data: bytes) -> None:
    assert error_of(engine, data) == ErrorCode.UNSUPPORTED_FORMAT


def test_the_unsupported_message_names_what_is_supported(engine: Engine) -> None:
    result = engine.scan(b"GIF? no, a text file")
    assert "JPEG, PNG" in result.error.message  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "gif", "tiff", "pdf", "bmp"])
def test_truncated_files_are_corrupt(engine: Engine, fmt: str) -> None:
    data = digital_invoice(30, fmt=fmt).data
    assert error_of(engine, data[: len(data) // 2]) == ErrorCode.CORRUPT_IMAGE


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "tiff", "gif"])
def test_a_valid_header_over_garbage_never_crashes_or_invents_a_code(
    engine: Engine, fmt: str
) -> None:
    # libjpeg decodes damaged entropy data as grey blocks rather than failing, and a
    # partly damaged photo is still worth scanning: so the promise is no crash, no
    # invented code, and a corrupt_image error whenever the decoder gives up.
    rng = np.random.default_rng(0)
    data = digital_invoice(31, fmt=fmt).data
    garbage = data[:600] + rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    result = engine.scan(garbage)
    assert result.codes == []
    assert result.ok or result.error.code == ErrorCode.CORRUPT_IMAGE  # type: ignore[union-attr]


def test_a_header_with_no_body_is_corrupt(engine: Engine) -> None:
    assert error_of(engine, b"\x89PNG\r\n\x1a\n") == ErrorCode.CORRUPT_IMAGE
    assert error_of(engine, b"%PDF-1.7\n") == ErrorCode.CORRUPT_IMAGE


def test_a_decompression_bomb_is_refused_from_its_header_alone(engine: Engine) -> None:
    bomb = png_bomb(20_000)  # 400 megapixels inside about 60 KB
    started = time.perf_counter()
    result = engine.scan(bomb)
    assert result.error is not None and result.error.code == ErrorCode.IMAGE_TOO_LARGE
    assert "20000x20000" in result.error.message
    assert time.perf_counter() - started < 0.5
    assert result.timings_ms["decode_image"] < 100


def test_a_decompression_bomb_costs_no_memory(tmp_path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(20_000))
    probe = (
        "import json, resource, sys\n"
        "from worker.engine import Engine\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "result = Engine().scan(open(sys.argv[1], 'rb').read())\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'code': result.error.code, 'grew_kb': after - before}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["code"] == "image_too_large"
    assert report["grew_kb"] < 50_000  # decoding it would take 400 MB


def test_the_pixel_limit_is_a_setting() -> None:
    sample = digital_invoice(32, megapixels=2.0)
    strict = Engine(Settings.from_env({"QRW_MAX_PIXELS": "1000000"}))
    assert error_of(strict, sample.data) == ErrorCode.IMAGE_TOO_LARGE


def test_the_byte_limit_is_checked_before_anything_else() -> None:
    strict = Engine(Settings.from_env({"QRW_MAX_BYTES": "1000"}))
    assert error_of(strict, digital_invoice(33).data) == ErrorCode.IMAGE_TOO_LARGE


def test_too_many_pages_is_refused_not_silently_cut() -> None:
    sample = digital_invoice(34, fmt="tiff", pages=3, n_codes=1)
    strict = Engine(Settings.from_env({"QRW_MAX_PAGES": "2"}))
    assert error_of(strict, sample.data) == ErrorCode.IMAGE_TOO_LARGE


def test_a_huge_pdf_page_is_rasterised_within_the_pixel_budget(settings: Settings) -> None:
    page = Image.new("L", (200, 200), 255)
    buffer = io.BytesIO()
    page.save(buffer, format="PDF", resolution=1.0)  # 200 x 200 inches
    result = Engine(settings).scan(buffer.getvalue())
    assert result.ok
    assert result.width * result.height <= settings.max_pixels


def test_deadline_exceeded_when_nothing_was_read_in_time(engine: Engine) -> None:
    sample = no_code_invoice(35, megapixels=4.0)
    result = engine.scan(sample.data, deadline_ms=1)
    assert result.error is not None and result.error.code == ErrorCode.DEADLINE_EXCEEDED
    assert result.complete is False


def test_codes_read_before_the_deadline_are_kept(engine: Engine) -> None:
    # Two codes, one readable by the fast pass: cutting the scan short must not lose it.
    sample = digital_invoice(36, n_codes=1)
    result = engine.scan(sample.data, deadline_ms=60_000)
    assert result.ok and result.complete and len(result.codes) == 1


def test_missing_and_unreadable_paths(engine: Engine, tmp_path) -> None:
    assert error_of(engine, tmp_path / "nope.jpg") == ErrorCode.NOT_FOUND
    assert error_of(engine, tmp_path) == ErrorCode.READ_FAILED


def test_odd_arrays_are_refused_clearly(engine: Engine) -> None:
    assert error_of(engine, np.zeros((10, 10), np.float32)) == ErrorCode.UNSUPPORTED_FORMAT
    assert error_of(engine, np.zeros((2, 2, 2, 2), np.uint8)) == ErrorCode.UNSUPPORTED_FORMAT


def test_every_error_serialises_with_a_stable_code(engine: Engine) -> None:
    payload = engine.scan(b"nonsense").to_dict()
    assert payload["ok"] is False
    assert payload["error"] == {
        "code": "unsupported_format",
        "message": payload["error"]["message"],
    }
    json.dumps(payload)
