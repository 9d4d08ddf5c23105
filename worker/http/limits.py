"""Admission control: at most N scans at once per process, and no waiting line.

A request that finds every slot taken is refused at once (503 with Retry-After), so a
burst can never pile up unbounded work, memory or latency inside the shim: the caller,
or its load balancer, retries where there is room.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Busy(Exception):
    """Every slot is taken."""


class Slots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def taken(self) -> int:
        return self._taken

    @contextmanager
    def take(self) -> Iterator[None]:
        with self._lock:
            if self._taken >= self.limit:
                raise Busy(f"all {self.limit} scan slots are in use")
            self._taken += 1
        try:
            yield
        finally:
            with self._lock:
                self._taken -= 1
