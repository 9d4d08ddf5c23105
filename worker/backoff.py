"""The one backoff of the project: how long to wait before trying Redis or storage again."""

from __future__ import annotations

import random


def backoff_s(attempt: int, *, first_s: float = 0.5, cap_s: float = 4.0) -> float:
    """Seconds to wait before try `attempt + 1` (attempt counts from 0): exponential from
    `first_s`, capped, with jitter (0.5x to 1.5x) so that a pool waiting out the same outage
    does not come back in lockstep."""
    return min(cap_s, first_s * 2**attempt) * (0.5 + random.random())
