"""Small codes on an image file reduced for the fast pass (issue 22, part 1): a scanned PDF
page goes through the path its JPEG takes as a file, so what that path misses on the file it
misses on the scan. A rendered page whose reduced read finds nothing still shows a small
code's texture (worker.engine.evidence), and that region is read at full size."""

from __future__ import annotations

import numpy as np
import pypdfium2 as pdfium
import pytest

from models.synth.samples import digital_invoice
from worker.engine import Engine
from worker.settings import Settings


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine(Settings.from_env({}))
    engine.warm_up()
    return engine


def test_three_micro_qr_codes_on_a_144_dpi_jpeg_file_are_all_read(engine: Engine) -> None:
    # The JPEG Pillow embeds in this PDF, given as a file: DCT-scaled to half (841 pixels)
    # for the fast pass, which reads none of its three Micro QR codes there; the detectors
    # read two, and the result said complete with the third never looked at.
    sample = digital_invoice(2002952723, fmt="pdf", megapixels=2.0, n_codes=3, micro=True)
    jpeg = bytes(next(pdfium.PdfDocument(sample.data)[0].get_objects()).get_data())
    result = engine.scan(jpeg, deadline_ms=0)
    assert result.format == "jpeg" and (result.width, result.height) == (1189, 1682)
    assert sorted(c.data for c in result.codes) == sorted(c.payload for c in sample.codes)
    # Its truth is at the page's 144 DPI, the JPEG's own grid.
    for truth in sample.codes:
        (code,) = [c for c in result.codes if c.data == truth.payload]
        assert np.abs(np.array(code.quad) - np.array(truth.quad)).max() <= 6.0
    assert result.complete and not result.unread
