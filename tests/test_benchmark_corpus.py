"""The benchmark corpus: named categories, deterministic, with truth for every code."""

from __future__ import annotations

import pytest

from models.synth.corpus import CATEGORIES, corpus_sample


def test_every_category_of_the_issue_is_there() -> None:
    assert set(CATEGORIES) >= {
        "digital",
        "blurred",
        "motion",
        "perspective",
        "rotated",
        "small",
        "low_contrast",
        "glare",
        "shadow",
        "noisy_jpeg",
        "curved",
        "damaged",
        "dense",
        "multi",
        "none",
    }


@pytest.mark.parametrize("category", CATEGORIES)
def test_samples_are_deterministic_and_carry_their_truth(category: str) -> None:
    first, again = corpus_sample(category, 3), corpus_sample(category, 3)
    assert first.data == again.data
    assert first.category == category
    assert corpus_sample(category, 4).data != first.data
    if category == "none":
        assert first.codes == ()
    elif category == "multi":
        assert 2 <= len(first.codes) <= 4
    else:
        assert first.codes
    for code in first.codes:
        assert all(0 <= x <= first.width and 0 <= y <= first.height for x, y in code.quad)
