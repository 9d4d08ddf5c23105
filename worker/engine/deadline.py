"""A monotonic time budget shared by every stage of one scan."""

from __future__ import annotations

import time


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
