"""The fast pass's texture evidence (worker.engine.evidence) is cheap and finds what it did.

It measures edge strength only inside the grey components big enough to hold a code block,
instead of across the whole reduced page (issue 19: digital invoices keep their speed), and
leaves out the codes the fast pass already read. Both must change nothing the fast pass acts
on: the blocks are those of the plain definition (a code's mean grey and a code's edges,
over the whole page), less those centred inside a read code.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.synth import digital_invoice
from models.synth.corpus import corpus_sample
from worker.engine import evidence
from worker.engine.images import open_document
from worker.engine.results import Quad
from worker.settings import Settings

SETTINGS = Settings(backend="none")


def plain_blocks(gray: np.ndarray) -> list[evidence.Box]:
    """The definition, measured over every cell of the page: 8-pixel cells with a code's
    mean grey and edge strength, joined 4-connected; square enough, full enough, 4 cells a
    side or more (3 with a code's strong edges); largest first."""
    cell = evidence._CELL
    rows, cols = (gray.shape[0] - 1) // cell, (gray.shape[1] - 1) // cell
    h, w = rows * cell, cols * cell
    base = gray[:h, :w]
    edges = cv2.add(cv2.absdiff(gray[:h, 1 : w + 1], base), cv2.absdiff(gray[1 : h + 1, :w], base))
    mean, strength = evidence._cells(base), evidence._cells(edges)
    low, high = evidence._MEAN_GREY
    candidate = (mean > low) & (mean < high) & (strength > evidence._EDGES)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        candidate.astype(np.uint8), connectivity=4
    )
    blocks = []
    for label in range(1, count):
        x, y, bw, bh, area = (int(v) for v in stats[label])
        short, long = min(bw, bh), max(bw, bh)
        edges_mean = float(strength[labels == label].mean())
        sized = short >= evidence._MIN_CELLS or (
            short == evidence._SMALL_CELLS and edges_mean >= evidence._SMALL_EDGES
        )
        if sized and long <= evidence._MAX_ASPECT * short and area >= evidence._MIN_FILL * bw * bh:
            box = (x * cell, y * cell, (x + bw) * cell, (y + bh) * cell)
            blocks.append((area, tuple(float(v) for v in box)))
    blocks.sort(key=lambda block: -block[0])
    return [box for _, box in blocks]


def reduced_page(data: bytes) -> tuple[np.ndarray, float]:
    return open_document(data, SETTINGS).pages[0].gray(SETTINGS.fast_max_side)


def test_the_blocks_are_those_of_the_plain_definition_on_invoices_and_photos() -> None:
    pages = [reduced_page(digital_invoice(seed, fmt="png").data)[0] for seed in range(1000, 1006)]
    pages += [reduced_page(digital_invoice(seed, fmt="jpeg").data)[0] for seed in range(1500, 1506)]
    pages += [reduced_page(corpus_sample("multi_digital", index).data)[0] for index in range(6)]
    # Photos are grey nearly everywhere: the whole page is measured at once there.
    pages += [reduced_page(corpus_sample("shadow", index).data)[0] for index in range(3)]
    found = 0
    for gray in pages:
        blocks = evidence.dense_squares(gray)
        assert blocks == plain_blocks(gray)
        found += len(blocks)
    assert found >= len(pages)  # every invoice shows its code's block


def test_noise_and_tiny_images_give_the_same_blocks_too() -> None:
    rng = np.random.default_rng(7)
    for size in (12, 23, 40, 97, 300):
        noise = rng.integers(0, 256, (size, size + 5), dtype=np.uint8)
        sparse = np.where(rng.random((size, size + 5)) < 0.85, 255, noise).astype(np.uint8)
        for gray in (noise, sparse):
            assert evidence.dense_squares(gray) == plain_blocks(gray)


def test_a_read_code_is_left_out_and_every_other_block_is_kept() -> None:
    # The page: a small code the reduced pass reads, a dense one it cannot see.
    sample = corpus_sample("multi_digital", 0)
    dense, small = sample.codes
    gray, scale = reduced_page(sample.data)
    read: Quad = tuple((x * scale, y * scale) for x, y in small.quad)  # type: ignore[assignment]
    everything = evidence.dense_squares(gray)
    without_read = evidence.dense_squares(gray, [read])
    assert any(_centre_in(box, small.quad, scale) for box in everything)
    assert without_read == [box for box in everything if not _centre_in(box, small.quad, scale)]
    assert any(_centre_in(box, dense.quad, scale) for box in without_read)


def _centre_in(box: evidence.Box, quad: Quad, scale: float) -> bool:
    outline = np.asarray(quad, np.float32).reshape(-1, 1, 2) * scale
    centre = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
    return cv2.pointPolygonTest(outline, centre, False) >= 0


def whole_page_labelling(gray: np.ndarray, read: list[Quad]) -> list[evidence.Box]:
    """dense_squares as it was before its components were labelled run by run (issue 19's
    speed): grey components labelled over the whole page, those whose every block would be
    centred inside a read code's (convex) outline left out, edges measured in the rows of
    the others."""
    cell, (low, high) = evidence._CELL, evidence._MEAN_GREY
    rows, cols = (gray.shape[0] - 1) // cell, (gray.shape[1] - 1) // cell
    if rows < evidence._SMALL_CELLS or cols < evidence._SMALL_CELLS:
        return []
    mean = evidence._cells(gray[: rows * cell, : cols * cell])
    grey = (mean > low) & (mean < high)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(grey.view(np.uint8), connectivity=4)
    sides = np.minimum(stats[:, 2], stats[:, 3])
    big = (sides >= evidence._SMALL_CELLS) & (stats[:, 4] >= evidence._MIN_AREA)
    big[0] = False
    for quad in read:
        outline = np.asarray(quad, np.float32).reshape(-1, 1, 2)
        if not cv2.isContourConvex(outline):
            continue
        for label in np.flatnonzero(big):
            x, y, w, h = (int(v) for v in stats[label, :4])
            x0, y0 = (x + 1.5) * cell, (y + 1.5) * cell
            x1, y1 = (x + w - 1.5) * cell, (y + h - 1.5) * cell
            corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
            if all(cv2.pointPolygonTest(outline, c, False) >= 0 for c in corners):
                big[label] = False
    if not big.any():
        return []
    if stats[big, 2] @ stats[big, 3] > evidence._WHOLE_PAGE * rows * cols:
        bands, inside = [(0, rows)], grey
    else:
        tops, heights = stats[big, 1], stats[big, 3]
        bands, inside = evidence._bands(tops.tolist(), (tops + heights).tolist()), big[labels]
    found = []
    for top, bottom in bands:
        found += _band_blocks(gray, inside[top:bottom], top)
    found.sort(key=lambda block: -block[0])
    return [box for _, box in found]


def _band_blocks(gray: np.ndarray, inside: np.ndarray, top: int) -> list[tuple[int, evidence.Box]]:
    """The blocks among the cells `inside` (the page's cell rows from `top` on, every column),
    measured and filtered over the whole band at once."""
    cell = evidence._CELL
    rows, cols = inside.shape
    y0, y1, x1 = top * cell, (top + rows) * cell, cols * cell
    base = gray[y0:y1, :x1]
    across = cv2.absdiff(gray[y0:y1, 1 : x1 + 1], base)
    strength = evidence._cells(cv2.add(across, cv2.absdiff(gray[y0 + 1 : y1 + 1, :x1], base)))
    candidate = inside & (strength > evidence._EDGES)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        candidate.view(np.uint8), connectivity=4
    )
    x, y, bw, bh, area = stats[1:count].T
    short, long = np.minimum(bw, bh), np.maximum(bw, bh)
    edges_mean = np.bincount(labels.ravel(), strength.ravel(), count)[1:] / np.maximum(area, 1)
    sized = (short >= evidence._MIN_CELLS) | (
        (short == evidence._SMALL_CELLS) & (edges_mean >= evidence._SMALL_EDGES)
    )
    keep = sized & (long <= evidence._MAX_ASPECT * short) & (area >= evidence._MIN_FILL * bw * bh)
    return [
        (
            a,
            (
                float(x0 * cell),
                float((top + y0) * cell),
                float((x0 + w0) * cell),
                float((top + y0 + h0) * cell),
            ),
        )
        for x0, y0, w0, h0, a in np.stack([x, y, bw, bh, area], axis=1)[keep].tolist()
    ]


def test_components_labelled_run_by_run_leave_out_the_same_blocks_as_over_the_whole_page() -> None:
    rng = np.random.default_rng(19)
    pages = [reduced_page(digital_invoice(seed, fmt="jpeg").data) for seed in range(1500, 1504)]
    pages += [reduced_page(corpus_sample("multi_digital", index).data) for index in range(4)]
    checked = 0
    for (gray, scale), sample_codes in zip(
        pages,
        [digital_invoice(seed, fmt="jpeg").codes for seed in range(1500, 1504)]
        + [corpus_sample("multi_digital", index).codes for index in range(4)],
        strict=True,
    ):
        height, width = gray.shape
        codes: list[Quad] = [
            tuple((x * scale, y * scale) for x, y in code.quad)  # type: ignore[misc]
            for code in sample_codes
        ]
        half: Quad = ((0.0, 0.0), (width / 2, 0.0), (width / 2, height), (0.0, height))
        x, y = rng.uniform(0, width - 60), rng.uniform(0, height - 60)
        turned: Quad = ((x + 30, y), (x + 60, y + 30), (x + 30, y + 60), (x, y + 30))
        bent: Quad = ((x, y), (x + 60, y), (x + 10, y + 10), (x, y + 60))  # not convex
        for read in ([], codes, codes[:1], [half], [turned, bent], [*codes, half]):
            assert evidence.dense_squares(gray, read) == whole_page_labelling(gray, read)
            checked += 1
    assert checked == 48


def test_a_page_grey_all_over_is_measured_whole_with_its_read_codes_as_before() -> None:
    # Past a quarter of the page in grey components, the whole page is measured at once and
    # a read code's blocks are kept, as the whole-page labelling keeps them.
    for index in range(3):
        sample = corpus_sample("shadow", index)
        gray, scale = reduced_page(sample.data)
        codes: list[Quad] = [
            tuple((x * scale, y * scale) for x, y in code.quad)  # type: ignore[misc]
            for code in sample.codes
        ]
        for read in ([], codes):
            assert evidence.dense_squares(gray, read) == whole_page_labelling(gray, read)


def test_the_callers_halving_gives_the_same_blocks() -> None:
    # The fast pass halves the page once, for fast.rendered and for this evidence both.
    sample = corpus_sample("multi_digital", 1)
    gray, scale = reduced_page(sample.data)
    read: list[Quad] = [
        tuple((x * scale, y * scale) for x, y in code.quad)  # type: ignore[misc]
        for code in sample.codes[1:]
    ]
    blocks = evidence.dense_squares(gray, read)
    assert blocks
    assert evidence.dense_squares(gray, read, evidence.halve(gray)) == blocks
