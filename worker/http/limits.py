"""Admission control: scan slots with a short bounded wait, and a byte budget for uploads.

A slot is taken only once a request's body is in, so a slow upload never holds one. A
request that finds every slot taken waits at most QRW_HTTP_SLOT_WAIT_MS, in arrival
order, and is then refused (503 with Retry-After): a burst keeps the slots busy without
piling up unbounded work or latency, and the caller, or its load balancer, retries where
there is room. The bodies one process holds at once (arriving, waiting or being
scanned) are bounded in bytes, so slow clients cannot hold unbounded memory, and a
trickle holds only the few bytes it has sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class Busy(Exception):
    """No room now: every slot is taken, or the upload budget is spent."""


class Slots:
    """At most `limit` scans at once; a request waits at most `wait_s` seconds for one.

    Used from the event loop only (the scans themselves run in threads), so the counters
    need no lock.
    """

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.waiting = 0
        self._free = anyio.Semaphore(limit, fast_acquire=True)

    @property
    def taken(self) -> int:
        return self.limit - self._free.value

    @property
    def saturated(self) -> bool:
        """Every slot taken and requests queueing for one: a balancer should route elsewhere."""
        return self.taken >= self.limit and self.waiting > 0

    @asynccontextmanager
    async def take(self) -> AsyncIterator[None]:
        if not self._try_now():
            await self._wait()
        try:
            yield
        finally:
            self._free.release()

    def _try_now(self) -> bool:
        try:
            self._free.acquire_nowait()
        except anyio.WouldBlock:
            return False
        return True

    async def _wait(self) -> None:
        acquired = False
        self.waiting += 1
        try:
            with anyio.move_on_after(self.wait_s):
                await self._free.acquire()
                acquired = True
        finally:
            self.waiting -= 1
        if not acquired:
            raise Busy(
                f"all {self.limit} scan slots stayed in use for {self.wait_s * 1000:.0f} ms "
                "(QRW_HTTP_SLOT_WAIT_MS)"
            )

    def describe(self) -> dict[str, int]:
        return {"limit": self.limit, "taken": self.taken, "waiting": self.waiting}


class Uploads:
    """The bytes of request bodies held at once, against a limit."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self.bodies = 0

    def hold(self) -> Holding:
        return Holding(self)

    def free(self) -> int:
        return self.limit_bytes - self.bytes

    def describe(self) -> dict[str, int]:
        return {"bodies": self.bodies, "bytes": self.bytes, "limit_bytes": self.limit_bytes}

    def refusal(self, wanted: int) -> Busy:
        return Busy(
            f"the shim holds {self.bytes} bytes of uploads; {wanted} more would pass its limit "
            f"of {self.limit_bytes} ((QRW_HTTP_CONCURRENCY + 2) x QRW_MAX_BYTES)"
        )


class Holding:
    """One request's share of the upload budget, given back when the request ends."""

    def __init__(self, uploads: Uploads) -> None:
        self._uploads = uploads
        self.bytes = 0
        self._counted = False

    def check(self, declared: int) -> None:
        """Refuse at once a body whose declared length cannot fit now."""
        if declared > self._uploads.free():
            raise self._uploads.refusal(declared)

    def add(self, size: int) -> None:
        if size > self._uploads.free():
            raise self._uploads.refusal(size)
        if not self._counted:
            self._counted = True
            self._uploads.bodies += 1
        self._uploads.bytes += size
        self.bytes += size

    def release(self) -> None:
        self._uploads.bytes -= self.bytes
        self.bytes = 0
        if self._counted:
            self._counted = False
            self._uploads.bodies -= 1
