"""The finder search on a rendered PDF page: white margins and the white between lines are
left out of its thresholding and tracing (worker.engine.finders.find_finders), and the
finders it reports are those of the whole page, in the same order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segno

from worker.engine import finders

MODULE = 3  # pixels a module: a 1 cm code on a page rendered at about 110 DPI is 1.3


def _page(code_at: tuple[int, int], speck: bool) -> np.ndarray:
    """A white 900 x 1200 page with lines of text-like strokes, a QR code at `code_at`
    (its top-left corner, quiet zone included) and, with `speck`, one light grey pixel
    in the far corner (then no margin of the page is white)."""
    page = np.full((1200, 900), 255, np.uint8)
    rng = np.random.default_rng(7)
    for top in range(700, 1100, 22):
        for left in range(60, 840, 9):
            if rng.random() < 0.8:
                page[top : top + 12, left : left + 2] = 30
                page[top + 5 : top + 7, left : left + 6] = 30
    matrix = np.array(segno.make_qr("https://example.com/invoice/2024-118", error="m").matrix)
    code = np.where(np.kron(matrix, np.ones((MODULE, MODULE))) > 0, 0, 255).astype(np.uint8)
    code = cv2.copyMakeBorder(code, *(4 * MODULE,) * 4, cv2.BORDER_CONSTANT, value=255)
    x, y = code_at
    page[y : y + code.shape[0], x : x + code.shape[1]] = code
    if speck:
        page[-1, -1] = 240
    return page


@pytest.mark.parametrize("code_at", [(400, 200), (0, 0)], ids=["inside", "at the corner"])
def test_finders_are_the_whole_pages(code_at: tuple[int, int]) -> None:
    found = finders.find_finders(_page(code_at, speck=False))
    whole = finders.find_finders(_page(code_at, speck=True))

    assert len(found) == 3
    assert all(abs(f.module - MODULE) < 0.5 for f in found)
    assert [(f.centre.tolist(), f.module) for f in found] == [
        (f.centre.tolist(), f.module) for f in whole
    ]


def test_a_white_page_has_no_finders() -> None:
    assert finders.find_finders(np.full((1200, 900), 255, np.uint8)) == []
