"""The corpus categories of issue 19: `lowres` and `multi_digital` (models.synth.corpus).

`lowres` is a phone photo shrunk by an upload pipeline: several codes a page, each at 2 to 4
pixels per module, saved as a JPEG of quality 60 to 85, some pages turned. `multi_digital` is a
clean digital page with a dense payment or tax code beside one or two ordinary ones: every
code there is readable at full size, so a reader that misses one has lost it, not failed on it.
Decode checks go through zxing-cpp, as in tests/test_synth.py and tests/test_corpus.py.
"""

from __future__ import annotations

import functools
import io
import json

import numpy as np
import pypdfium2 as pdfium
import pytest
import zxingcpp
from PIL import Image

from models.synth.corpus import CATEGORIES, CorpusSample, corpus_sample, write_corpus

QR_FORMATS = (zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode)
NEW = ("lowres", "multi_digital")


@functools.cache
def sample(category: str, index: int) -> CorpusSample:
    return corpus_sample(category, index)


def gray(s: CorpusSample) -> np.ndarray:
    if s.fmt == "pdf":
        page = pdfium.PdfDocument(s.data)[0]
        return np.asarray(page.render(scale=s.dpi / 72, grayscale=True).to_pil().convert("L"))
    with Image.open(io.BytesIO(s.data)) as image:
        return np.asarray(image.convert("L"))


def version(designator: str) -> int:
    return int(designator.split("-")[0].lstrip("M"))


def test_both_categories_are_in_the_corpus_and_the_old_ones_keep_their_place() -> None:
    assert CATEGORIES[-2:] == NEW
    assert CATEGORIES.index("none") == 14


@pytest.mark.parametrize("category", NEW)
def test_samples_are_deterministic_per_index_and_seed(category: str) -> None:
    first = sample(category, 2)
    assert corpus_sample(category, 2).data == first.data
    assert corpus_sample(category, 2).ground_truth() == first.ground_truth()
    assert corpus_sample(category, 2, seed=1).data != first.data
    assert corpus_sample(category, 3).data != first.data


def test_adding_the_categories_left_the_existing_samples_unchanged() -> None:
    # Seeds come from crc32 of the category's name, not its position in CATEGORIES.
    truth = json.loads(json.dumps(corpus_sample("multi", 0).ground_truth()))
    assert truth["name"] == "multi-0000" and 2 <= len(truth["codes"]) <= 4
    assert corpus_sample("multi", 0).data == corpus_sample("multi", 0).data


def test_lowres_pages_carry_several_codes_at_two_to_four_pixels_per_module() -> None:
    rolls = []
    for index in range(12):
        s = sample("lowres", index)
        assert s.fmt == "jpeg" and s.category == "lowres"
        assert 2 <= len(s.codes) <= 4
        for code in s.codes:
            assert 2.0 <= code.module_px <= 4.05, (s.name, code.module_px)
            quad = np.array(code.quad)
            assert (quad >= 0).all() and (quad[:, 0] <= s.width).all()
            assert (quad[:, 1] <= s.height).all()
        conditions = dict(s.conditions)
        assert 60 <= int(conditions["jpeg_quality"]) <= 85
        assert conditions["module_px_min"] == pytest.approx(
            min(c.module_px for c in s.codes), abs=1e-3
        )
        rolls.append(float(conditions["roll"]))
    # Some pages are turned in the frame, most are nearly upright.
    turned = [r for r in rolls if 10 < r % 360 < 350]
    assert 1 <= len(turned) < len(rolls)


def test_lowres_is_hard_but_not_noise_for_zxing_alone() -> None:
    read = total = 0
    for index in range(8):
        s = sample("lowres", index)
        found = {bytes(b.bytes) for b in zxingcpp.read_barcodes(gray(s), formats=QR_FORMATS)}
        read += sum(code.payload in found for code in s.codes)
        total += len(s.codes)
    assert 0 < read < total


def test_multi_digital_pages_put_a_dense_code_beside_smaller_ones() -> None:
    for index in range(12):
        s = sample("multi_digital", index)
        assert s.category == "multi_digital" and s.fmt in ("png", "jpeg", "pdf")
        assert 2 <= len(s.codes) <= 3
        dense, *others = s.codes
        assert 9 <= version(dense.version) <= 25
        # Printed smaller per module than the others (at 150 DPI both sit at the 4-pixel
        # floor of the renderer), and with more modules than a version 9 code.
        assert dense.module_px <= min(code.module_px for code in others)
        assert dense.modules >= 53
        assert dict(s.conditions)["dense_version"] == dense.version


def test_every_multi_digital_code_reads_at_full_size_with_its_exact_bytes() -> None:
    for index in range(10):
        s = sample("multi_digital", index)
        barcodes = zxingcpp.read_barcodes(
            gray(s), formats=QR_FORMATS, text_mode=zxingcpp.TextMode.Plain
        )
        found = {bytes(b.bytes) for b in barcodes}
        assert {code.payload for code in s.codes} <= found, s.name


def test_the_corpus_writer_writes_the_new_categories(tmp_path) -> None:
    written = write_corpus(tmp_path, NEW, per_category=1, seed=0)
    names = {path.name for path in written}
    assert {"lowres-0000.jpg", "lowres-0000.json", "multi_digital-0000.json"} <= names
    truth = json.loads((tmp_path / "multi_digital-0000.json").read_text())
    assert truth["category"] == "multi_digital" and len(truth["codes"]) >= 2
