"""A monotonic time budget shared by every stage of one scan, and the clock of the work
budgets inside it."""

from __future__ import annotations

import time

# The clock of work budgets: how much effort a place or a page earns (the soft decoder's
# limit per place, the late variants and the fitted outlines per page). They keep a page of
# decoys from taking a second; the scan's Deadline, on the wall clock, bounds how long a
# scan takes. In the scanning thread's CPU time, the same image earns the same effort on an
# idle machine and on a busy one: on the wall clock, a 2-core machine at a load of 6 gave
# a third of it, and what was read depended on what else ran (tests/test_work_budgets.py).
work_clock = time.thread_time


class Deadline:
    def __init__(self, budget_ms: float | None) -> None:
        self.started = time.perf_counter()
        self.budget_ms = budget_ms if budget_ms and budget_ms > 0 else None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def remaining_ms(self) -> float:
        if self.budget_ms is None:
            return float("inf")
        return self.budget_ms - self.elapsed_ms()

    def expired(self) -> bool:
        return self.remaining_ms() <= 0
