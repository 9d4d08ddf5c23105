"""The benchmark corpus, models.synth.corpus: categories, determinism and ground truth.

Decode checks go through zxing-cpp like tests/test_synth.py, so "ground truth"
means what a reader reports: exact payload bytes, symbol versions and corners.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import types

import numpy as np
import pypdfium2 as pdfium
import pytest
import zxingcpp
from PIL import Image

from models.synth.corpus import (
    CATEGORIES,
    CorpusCode,
    CorpusSample,
    corpus,
    corpus_sample,
    main,
    write_corpus,
)

QR_FORMATS = (zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode)
QUAD_TOLERANCE_PX = 3.0


@functools.cache
def sample(category: str, index: int) -> CorpusSample:
    return corpus_sample(category, index)


def gray(s: CorpusSample) -> np.ndarray:
    if s.fmt == "pdf":
        page = pdfium.PdfDocument(s.data)[0]
        return np.asarray(page.render(scale=s.dpi / 72, grayscale=True).to_pil().convert("L"))
    with Image.open(io.BytesIO(s.data)) as image:
        return np.asarray(image.convert("L"))


def read(s: CorpusSample) -> list[zxingcpp.Barcode]:
    return zxingcpp.read_barcodes(gray(s), formats=QR_FORMATS, text_mode=zxingcpp.TextMode.Plain)


def matching(s: CorpusSample, code: CorpusCode) -> zxingcpp.Barcode | None:
    return next((b for b in read(s) if b.bytes == code.payload), None)


def zxing_quad(barcode: zxingcpp.Barcode) -> np.ndarray:
    p = barcode.position
    corners = (p.top_left, p.top_right, p.bottom_right, p.bottom_left)
    return np.array([(c.x, c.y) for c in corners], dtype=float)


def module_size(code: CorpusCode) -> float:
    quad = np.array(code.quad)
    sides = np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1)
    return float(sides.mean() / code.modules)


# --- every category --------------------------------------------------------------------------


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_is_reproducible_byte_for_byte(category: str) -> None:
    first, again = sample(category, 3), corpus_sample(category, 3)
    assert first.data == again.data
    assert first.ground_truth() == again.ground_truth()
    assert corpus_sample(category, 3, seed=1).data != first.data


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_generates_named_samples_with_truth_inside_the_image(category: str) -> None:
    s = sample(category, 3)
    assert (s.name, s.category) == (f"{category}-0003", category)
    assert s.pages == 1
    for code in s.codes:
        assert isinstance(code, CorpusCode)
        quad = np.array(code.quad)
        assert quad.shape == (4, 2)
        assert (quad >= 0).all()
        assert (quad[:, 0] <= s.width).all()
        assert (quad[:, 1] <= s.height).all()
        assert code.module_px == pytest.approx(module_size(code), rel=1e-6)


def test_unknown_categories_and_bad_indices_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown category"):
        corpus_sample("sepia", 0)
    with pytest.raises(ValueError, match="index"):
        corpus_sample("digital", -1)
    with pytest.raises(ValueError, match="unknown categories"):
        list(corpus(["digital", "sepia"], 1))


def test_corpus_is_lazy_and_category_major() -> None:
    stream = corpus(["none", "digital"], per_category=2, seed=4)
    assert isinstance(stream, types.GeneratorType)
    names = [s.name for s in stream]
    assert names == ["none-0000", "none-0001", "digital-0000", "digital-0001"]
    assert next(corpus(["none"], 1, seed=4)).data == corpus_sample("none", 0, seed=4).data


# --- category contents -----------------------------------------------------------------------


def test_digital_pages_are_clean_renders_that_all_decode() -> None:
    for index in range(4):
        s = sample("digital", index)
        assert s.fmt in ("png", "jpeg", "pdf")
        assert 150 <= s.dpi <= 300
        got = {b.bytes for b in read(s)}
        assert all(code.payload in got for code in s.codes), s.name


def test_none_pages_hold_no_code_and_zxing_finds_none() -> None:
    decoys = set()
    for index in range(6):
        s = sample("none", index)
        assert s.codes == ()
        decoys.update(str(dict(s.conditions)["decoys"]).split(", "))
        assert not zxingcpp.read_barcodes(gray(s), formats=QR_FORMATS, try_invert=True), s.name
    assert len(decoys) >= 4


def test_multi_pages_hold_two_to_four_distinct_codes() -> None:
    counts = set()
    for index in range(8):
        codes = sample("multi", index).codes
        counts.add(len(codes))
        assert 2 <= len(codes) <= 4
        assert len({code.quad for code in codes}) == len(codes)
    assert len(counts) >= 2


def test_dense_codes_are_versions_15_to_25_as_zxing_reports_them() -> None:
    confirmed = 0
    for index in range(6):
        s = sample("dense", index)
        (code,) = s.codes
        version = int(code.version.split("-")[0])
        assert 15 <= version <= 25
        assert code.modules == 17 + 4 * version
        if (barcode := matching(s, code)) is not None:
            assert barcode.extra["Version"] == str(version)
            confirmed += 1
    assert confirmed >= 1


def test_small_codes_have_modules_under_two_pixels() -> None:
    for index in range(8):
        (code,) = sample("small", index).codes
        assert 1.0 < module_size(code) < 2.0


def test_curved_truth_corners_are_where_zxing_sees_them() -> None:
    checked = 0
    for index in range(6):
        s = sample("curved", index)
        (code,) = s.codes
        if (barcode := matching(s, code)) is not None:
            assert np.abs(zxing_quad(barcode) - np.array(code.quad)).max() <= QUAD_TOLERANCE_PX
            checked += 1
    assert checked >= 1


def test_photo_categories_record_how_they_were_degraded() -> None:
    s = sample("blurred", 0)
    conditions = dict(s.conditions)
    assert conditions["blur_sigma_px"] > 0
    assert 0 <= conditions["strength"] <= 1
    truth = s.ground_truth()
    assert truth["conditions"] == conditions
    assert truth["codes"][0]["version"] == s.codes[0].version
    assert truth["category"] == "blurred"


# --- writing a folder ------------------------------------------------------------------------


def test_write_corpus_writes_images_truth_and_expected_text(tmp_path) -> None:
    write_corpus(tmp_path, ["digital", "none"], per_category=2, seed=0)
    truths = sorted(tmp_path.glob("*.json"))
    assert [p.stem for p in truths] == ["digital-0000", "digital-0001", "none-0000", "none-0001"]
    for path in truths:
        truth = json.loads(path.read_text(encoding="utf-8"))
        s = corpus_sample(truth["category"], int(path.stem[-4:]))
        assert (tmp_path / f"{s.name}.{s.extension}").read_bytes() == s.data
        payloads = [base64.b64decode(c["payload_base64"]) for c in truth["codes"]]
        assert payloads == [code.payload for code in s.codes]
        txt = path.with_suffix(".txt")
        if len(s.codes) == 1 and s.codes[0].is_text:
            assert txt.read_bytes() == s.codes[0].payload
        else:
            assert not txt.exists()


def test_cli_writes_the_chosen_categories(tmp_path, capsys) -> None:
    out = tmp_path / "corpus"
    assert main([str(out), "--per-category", "1", "--categories", "small,none", "--seed", "2"]) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["none-0000.json", "small-0000.json"]
    assert "wrote 2 samples" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(out), "--categories", "digital,sepia"])
