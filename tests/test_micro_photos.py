"""Micro QR codes on photo pages that no QR look locates (worker.engine.stages.micro): a page
whose QR codes were read said `complete` with its Micro QR code never located.

On the benchmark's multi-0016 (a photo of four codes, the Micro QR code at 1.9 pixels a
module) the cascade read the three QR codes and nothing located the fourth; on multi-0043 (camera
shake) the Micro QR code is located and cannot be read, and says so.
"""

from __future__ import annotations

from collections import Counter

import pytest

from models.synth.corpus import corpus_sample
from worker.bench.false_reads import MICRO_KINDS, MicroCropSource
from worker.bench.scoring import iou
from worker.engine import Engine
from worker.engine.cascade import bounds
from worker.engine.stages import micro
from worker.settings import Settings


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(Settings(backend="onnx"))


def test_a_micro_qr_code_beside_read_qr_codes_is_read(engine: Engine) -> None:
    sample = corpus_sample("multi", 16)
    result = engine.scan(sample.data)
    truth = {code.payload for code in sample.codes}
    micro = [code for code in sample.codes if code.format == "MicroQRCode"]
    assert len(micro) == 1
    read = [code for code in result.codes if code.format == "MicroQRCode"]
    assert [code.data for code in read] == [micro[0].payload]
    # Nothing read that the page does not hold, every code of it read, and complete.
    assert all(code.data in truth for code in result.codes)
    assert len(result.codes) == len(sample.codes)
    assert result.complete


def test_a_micro_qr_code_located_and_not_read_keeps_the_page_open(engine: Engine) -> None:
    sample = corpus_sample("multi", 43)
    result = engine.scan(sample.data)
    micro = next(code for code in sample.codes if code.format == "MicroQRCode")
    assert not any(code.format == "MicroQRCode" for code in result.codes)
    assert not result.complete
    assert any(iou(bounds(u.quad), bounds(micro.quad)) >= 0.5 for u in result.unread)


def test_the_micro_look_reads_nothing_where_no_micro_qr_code_is() -> None:
    """Its reads are zxing-cpp's own, past a gate of one finder pattern: mock Micro QR symbols
    (every module a reader checks before Reed-Solomon right, random data), the same turned and
    blurred, and the QR decoder's false-read crops give nothing, and a real symbol its own
    digits. The full run is `python -m worker.bench.false_reads --micro --count 20000`."""
    source = MicroCropSource(seed=7)
    gated: Counter[str] = Counter()
    wrong = []
    for index in range(len(MICRO_KINDS) * 30):
        crop, box = source.crop(index)
        read = micro.look_at(crop.image, box)
        if read is None:
            continue
        gated[crop.kind] += 1
        wrong += [(index, crop.kind, s.data) for s in read if s.data != crop.payload]
        if crop.kind == "micro":
            assert [s.data for s in read] == [crop.payload]
    assert wrong == []
    # The random symbols reach zxing-cpp's Reed-Solomon, not only the gate.
    assert gated["mock_micro"] == gated["micro"] == 30 and gated["mock_micro_warped"] >= 20
