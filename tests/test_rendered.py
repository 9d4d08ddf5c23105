"""Whether a page looks rendered (fast.rendered: 60% of its pixels full white or more) is
settled on rendered pages from the 2x2 means that the texture evidence halves the page into
anyway (evidence.halve): a mean of 255 is four full-white pixels, and those alone reach the
share on a rendered page, which spares a pass over every pixel (issue 19: digital invoices
keep their speed). The answer is the count's on every page: where the means fall short,
every pixel is counted as before.
"""

from __future__ import annotations

import numpy as np

from models.synth import digital_invoice
from models.synth.corpus import corpus_sample
from worker.engine import evidence
from worker.engine.images import open_document
from worker.engine.stages import fast
from worker.settings import Settings

SETTINGS = Settings(backend="none")


def counted(gray: np.ndarray) -> bool:
    """The definition: every pixel counted."""
    return np.count_nonzero(gray >= fast._WHITE) >= fast._RENDERED_WHITE_SHARE * gray.size


def reduced_page(data: bytes) -> np.ndarray:
    return open_document(data, SETTINGS).pages[0].gray(SETTINGS.fast_max_side)[0]


def settled_by_the_means(gray: np.ndarray) -> bool:
    half = evidence.halve(gray)
    assert half is not None
    return 4 * np.count_nonzero(half == 255) >= fast._RENDERED_WHITE_SHARE * gray.size


def near_the_line(rng: np.random.Generator, shape: tuple[int, int], share: float) -> np.ndarray:
    """A page whose pixels sit about the white level (248 to 252 and full white), `share`
    of them white: the means of such pixels bound their count least."""
    white = rng.random(shape) < share
    return np.where(
        white, rng.choice([250, 251, 252, 255], shape), rng.choice([247, 248, 249], shape)
    ).astype(np.uint8)


def test_the_means_decide_every_page_as_counting_its_pixels_does() -> None:
    rng = np.random.default_rng(19)
    pages = [reduced_page(digital_invoice(seed, fmt="jpeg").data) for seed in range(1000, 1004)]
    pages += [
        reduced_page(digital_invoice(seed, fmt="png", color=True).data) for seed in (2500, 2501)
    ]
    pages += [reduced_page(corpus_sample(kind, 0).data) for kind in ("shadow", "glare", "none")]
    pages += [near_the_line(rng, (97, 130), share) for share in (0.55, 0.59, 0.6, 0.61, 0.65)]
    pages += [rng.integers(0, 256, (size, size + 3), dtype=np.uint8) for size in (5, 9, 16, 40)]
    pages += [np.full((33, 41), value, np.uint8) for value in (249, 250, 255)]
    assert {counted(gray) for gray in pages} == {True, False}
    # Pixels about the white level leave it open: those pages are counted.
    assert not all(settled_by_the_means(gray) for gray in pages if counted(gray))
    for gray in pages:
        assert fast.rendered(gray, evidence.halve(gray)) == counted(gray) == fast.rendered(gray)


def test_digital_invoices_are_settled_without_a_count() -> None:
    invoices = [reduced_page(digital_invoice(seed, fmt="jpeg").data) for seed in range(1000, 1004)]
    invoices += [reduced_page(digital_invoice(2500, fmt="png", color=True).data)]
    assert all(counted(gray) and settled_by_the_means(gray) for gray in invoices)
