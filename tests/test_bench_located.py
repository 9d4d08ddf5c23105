"""`python -m worker.bench.located`: what became of each labelled code of a real-photo set."""

from __future__ import annotations

from worker.bench.located import Tally

CODE = (100.0, 100.0, 200.0, 200.0)
OTHER = (400.0, 400.0, 450.0, 450.0)


def test_a_labelled_code_read_counts_as_read_whatever_else_is_unread() -> None:
    tally = Tally()
    tally.add([CODE], [True], [CODE], complete=False)
    assert (tally.read, tally.located, tally.never) == (1, 0, 0)


def test_an_unread_code_an_unread_region_overlaps_was_located() -> None:
    tally = Tally()
    tally.add([CODE], [False], [(150.0, 150.0, 260.0, 260.0)], complete=False)
    assert (tally.read, tally.located, tally.never) == (0, 1, 0)


def test_an_unread_code_no_unread_region_overlaps_was_never_located() -> None:
    tally = Tally()
    tally.add([CODE, OTHER], [False, True], [], complete=True)
    assert (tally.labelled, tally.read, tally.located, tally.never) == (2, 1, 0, 1)
    # The page said complete with a code on it that nothing located.
    assert tally.complete_with_a_miss == 1
