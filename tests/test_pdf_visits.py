"""PDF invoices at the speed of their rendering (issue 22's targets): what a born-digital page
costs. Its pages come from the renderer child in the one round trip that opens the document,
each page loaded once for its kind and its fast render; a page whose clean fast render shows
nothing of a code is settled before any detector (a model trained on photos) looks at it."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import cv2
import numpy as np
import pypdfium2 as pdfium

from models.synth.corpus import corpus_sample
from models.synth.pdfs import born_digital_pdf, pdf_set, scanned_pdf
from worker.engine import Engine, evidence
from worker.engine.cascade import Findings, StageContext
from worker.engine.deadline import Deadline
from worker.engine.errors import DeadlineReached
from worker.engine.images import open_document
from worker.engine.isolation import ChildDocument, open_in_child
from worker.engine.pdf import page_grids, reduced_scale
from worker.engine.pdf_pages import BORN_DIGITAL
from worker.engine.stages import DetectorStage, FastStage
from worker.engine.stages.born_digital import edge_cells, texture_blocks
from worker.settings import Settings


def _opened_then_child_killed(data: bytes, settings: Settings) -> ChildDocument:
    """The document opened in a renderer child, which is then killed: what the engine gets
    afterwards came with the open's reply (a request now fails: the child is gone)."""
    document = open_in_child(data, settings, None)
    os.kill(document._child.pid, signal.SIGKILL)
    document._child.process.wait()
    return document


def test_every_page_of_a_document_comes_with_the_open_in_one_round_trip() -> None:
    settings = Settings.from_env({}, pdf_child=True)
    sample = born_digital_pdf(140, pages=3, code_pages=(2,))
    document = _opened_then_child_killed(sample.data, settings)
    assert [kind["kind"] for kind in document.kinds] == [BORN_DIGITAL] * 3
    grids = page_grids(
        document.sizes, settings.pdf_dpi, settings.max_pixels, settings.max_document_pixels
    )
    for index, grid in enumerate(grids):
        page = document.render(index, reduced_scale(grid, settings.fast_max_side))
        assert abs(max(page.shape) - settings.fast_max_side) <= 1  # PDFium rounds up
        assert page.min() < 128 < page.max()  # a page of text, not an empty buffer


def test_pages_past_the_page_buffers_budget_are_rendered_when_asked_for() -> None:
    # 15 A4 pages at the fast resolution are 17 MiB: those past 16 MiB stay in the child,
    # rendered on request as before (a request now finds the child gone: the deadline's
    # own error, which is what a renderer killed at the deadline gives).
    settings = Settings.from_env({}, pdf_child=True)
    sample = born_digital_pdf(144, pages=15, code_pages=())
    document = _opened_then_child_killed(sample.data, settings)
    grids = page_grids(
        document.sizes, settings.pdf_dpi, settings.max_pixels, settings.max_document_pixels
    )
    scales = [reduced_scale(grid, settings.fast_max_side) for grid in grids]
    came = []
    for index, scale in enumerate(scales):
        try:
            came.append(document.render(index, scale).nbytes)
        except DeadlineReached:
            break
    assert 10 <= len(came) < 15
    assert sum(came) <= 16 * 2**20


def test_a_scanned_documents_jpegs_come_with_the_open_too() -> None:
    settings = Settings.from_env({}, pdf_child=True)
    sample = scanned_pdf(141, pages=2, code_pages=(1,), encoding="jpeg", dpi=200.0)
    document = _opened_then_child_killed(sample.data, settings)
    for index in range(2):
        assert document.jpeg(index)[:2] == b"\xff\xd8"


def test_a_born_digital_page_without_a_code_is_settled_before_the_detectors_look() -> None:
    settings = Settings.from_env({})
    engine = Engine(settings)
    detectors = [s for s in engine.stages if isinstance(s, DetectorStage)]
    assert detectors, "the default settings run the detectors"
    sample = born_digital_pdf(142, pages=3, code_pages=(1,))
    document = open_document(sample.data, settings)
    ctx = StageContext(document, settings, Deadline(0), "all", Findings())
    FastStage(look_again_at_photos=True).run(ctx)
    for stage in detectors:
        stage.run(ctx if stage is detectors[0] else replace(ctx, skip_blind_pages=True))
    # Pages 1 and 3 hold no code: settled from their fast renders alone, no inference run.
    assert ctx.findings.settled(0) and ctx.findings.settled(2)
    assert 0 not in ctx.findings.detector_scores and 2 not in ctx.findings.detector_scores
    assert ctx.findings.satisfied("all", 3)
    assert [(c.page, c.data) for c in ctx.findings.codes] == [(1, sample.codes[0].payload)]


def test_a_scanned_jpeg_page_is_decoded_as_its_file_is() -> None:
    # A 200 DPI scan (2478 pixels long): the fast pass gets it DCT-scaled to half (1239
    # pixels, the largest scale within the fast side), and the detectors' and the thorough
    # pass's full size is one more decode, as for the same JPEG given as a file: the same
    # images, the same pixels decoded.
    settings = Settings.from_env({})
    sample = scanned_pdf(143, encoding="jpeg", dpi=200.0)
    (page,) = open_document(sample.data, settings).pages
    jpeg = bytes(next(pdfium.PdfDocument(sample.data)[0].get_objects()).get_data())
    (as_file,) = open_document(jpeg, settings).pages
    assert page.native == (as_file.width, as_file.height)
    for side in (settings.fast_max_side, settings.thorough_max_side):
        image, _ = page.gray(side)
        assert np.array_equal(image, as_file.gray(side)[0])
        assert page._pool.decoded_pixels == as_file._pool.decoded_pixels
    assert max(page.gray(settings.fast_max_side)[0].shape) == -(-max(page.native) // 2)


def _plain_texture_blocks(gray: np.ndarray) -> list[tuple[float, float, float, float]]:
    """born_digital.texture_blocks by its definition: edges measured over the whole page."""
    cell = evidence._CELL
    rows, cols = (gray.shape[0] - 1) // cell, (gray.shape[1] - 1) // cell
    if rows < 3 or cols < 3:
        return []
    mean = evidence._cells(gray[: rows * cell, : cols * cell])
    strength = edge_cells(gray, 0, rows, cols)
    low, high = evidence._MEAN_GREY
    candidate = (mean > low) & (mean < high) & (strength > evidence._EDGES)
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        candidate.astype(np.uint8), connectivity=8
    )
    blocks = []
    for x0, y0, bw, bh, area in stats[1:count].tolist():
        short, long = min(bw, bh), max(bw, bh)
        if short >= 3 and long <= 1.6 * short and area >= 0.35 * bw * bh:
            box = (x0 * cell, y0 * cell, (x0 + bw) * cell, (y0 + bh) * cell)
            blocks.append((float(box[0]), float(box[1]), float(box[2]), float(box[3])))
    return blocks


def test_texture_blocks_are_those_of_their_whole_page_definition() -> None:
    # Edges are measured only in the rows of grey components that can hold a block: the same
    # blocks, on born-digital renders with and without codes, photos and noise.
    settings = Settings.from_env({}, pdf_child=False)
    grays = []
    for sample in [*pdf_set(22, 12, "pdf_digital"), born_digital_pdf(9501, pages=2, code_pages=())]:
        grays += [
            p.gray(settings.fast_max_side)[0] for p in open_document(sample.data, settings).pages
        ]
    for category in ("blurred", "glare", "multi_digital", "lowres"):
        grays.append(
            open_document(corpus_sample(category, 1).data, settings).pages[0].gray(1280)[0]
        )
    rng = np.random.default_rng(5)
    grays += [
        rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((300, 200), (40, 90), (23, 23))
    ]
    assert sum(bool(_plain_texture_blocks(g)) for g in grays) >= 10
    for gray in grays:
        assert texture_blocks(gray) == _plain_texture_blocks(gray)
