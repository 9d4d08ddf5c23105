"""Where a stop request may cut into a worker's main thread.

RQ handles the pool's stop (SIGINT) in a signal handler that, in an idle worker, raises
StopRequested at once, wherever the main thread happens to be. An idle RQ worker is only
ever waiting in BLPOP, so RQ can afford that; ours does more between two jobs: it pops a
job and admits it (reads, checks, answers a refused one), runs maintenance passes, waits
for a full Redis. Issue 18's soak met the stop inside an admission: a guard for bugs in
our checks caught it, dead-lettered the job with no result, and forgot the stop, so the
worker ran on and its pool never exited.

So the handler only raises where nothing is in hand and the thread is in a known wait
(`interruptible`): between pops, in the backoff sleeps of a Redis that is away or full.
Everywhere else it records the request (`requested`) and the worker stops at its next
safe point: the pop loop checks before each pop (`check`), RQ's work loop before each job.
A job popped is held (`hold`) from the pop until the worker has run it.

One gate per process: signals are per process, and each RQ worker is a process of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rq.exceptions import StopRequested

# Longest wait of one blocking pop: a stop requested meanwhile is seen when it returns, so
# this bounds how long an idle worker takes to stop (the listener thread's wake, 0.5 s, is
# the other bound).
POP_SLICE_S = 0.5


class StopGate:
    def __init__(self) -> None:
        self.requested = False
        self._open = 0
        self._holding = False

    def request(self) -> None:
        """The stop request, from the signal handler: raises only where that is safe."""
        self.requested = True
        if self._open and not self._holding:
            raise StopRequested()

    def check(self) -> None:
        """A safe point: leave now if a stop was asked for."""
        if self.requested:
            raise StopRequested()

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A wait the stop request may cut short (while no job is held)."""
        self.check()
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1

    def hold(self) -> None:
        """A job may be in hand from here on (a pop is under way): no interruption."""
        self._holding = True

    def release(self) -> None:
        """Nothing is in hand any more."""
        self._holding = False


GATE = StopGate()
