"""`python -m worker.bench.pdf_floor`: the floor of a born-digital scan that renders no whole
page (issue 22's median target), step by step."""

from __future__ import annotations

from models.synth.pdfs import born_digital_pdf
from worker.bench.pdf_floor import STEPS, floors, report
from worker.settings import Settings


def test_every_code_is_a_candidate_of_the_walk_and_read_from_its_region_alone() -> None:
    samples = [
        born_digital_pdf(1, pages=2, code_pages=(1,)),  # vector rectangles, one path
        born_digital_pdf(2, code_as="image"),  # a small image, a pixel a module
        born_digital_pdf(3, angle=30.0, invert=True),  # turned, light modules on dark
        born_digital_pdf(4, code_pages=()),  # no code: nothing to render or read
    ]
    results = floors(samples, Settings.from_env(), repeat=1)
    assert [(f.codes, f.candidates, f.read) for f in results] == [
        (1, 1, 1),
        (1, 1, 1),
        # The inverted code's dark square is one rectangle, not a candidate: its light
        # modules are, and the region around them shows the square too.
        (1, 1, 1),
        (0, 0, 0),
    ]
    for floor in results:
        assert set(floor.steps) == set(STEPS)
        assert floor.render > 0 and floor.cold > 0
        assert floor.total == sum(floor.steps.values())
    text = report("four documents", results)
    assert "4 documents, 3 codes, 3 candidates, 3 read from their regions" in text
    assert "| **every step** (median of the sums) |" in text
