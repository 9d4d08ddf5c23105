"""How far a backfill has come, shown while it runs.

In a terminal a live table (rich) redrawn a few times a second; without one (a Kubernetes
Job, a CI log) one structured `backfill_progress` event every LOG_EVERY_S. Both show the
same numbers: objects listed, enqueued, in flight (jobs), written (ok / failed), images/s
over the last RATE_WINDOW_S and, once the total is known, the ETA.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import structlog

from worker.backfill.state import Run

log = structlog.get_logger("worker.backfill")

LOG_EVERY_S = 5.0
RATE_WINDOW_S = 30.0
_REDRAW_S = 0.25


class Rate:
    """Images per second over a sliding window of what this process saw done (the driver
    leaves out the results that waited for it at a resume)."""

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self.events: deque[tuple[float, int]] = deque()
        self.in_window = 0
        self.started = time.monotonic()

    def add(self, images: int) -> None:
        self.events.append((time.monotonic(), images))
        self.in_window += images

    def per_second(self) -> float | None:
        now = time.monotonic()
        while self.events and now - self.events[0][0] > self.window:
            self.in_window -= self.events.popleft()[1]
        elapsed = min(self.window, now - self.started)
        # Nothing to say in the first second: one early part would read as a huge rate.
        return self.in_window / elapsed if elapsed >= 1.0 else None


def numbers(run: Run, exhausted: bool, rate: float | None) -> dict[str, Any]:
    """What both displays show, from the run's state."""
    counts = run.counts
    written = counts["objects_ok"] + counts["objects_failed"]
    total: int | None = None
    if exhausted or run.finished:
        total = counts["enqueued"] - counts["cancelled"]
    elif run.spec.filters.limit is not None:
        total = run.spec.filters.limit
    eta = None
    if total is not None and rate:
        eta = max(0.0, (total - written) / rate)
    return {
        "run": run.name,
        "state": run.state.value,
        "listed": counts["listed"],
        "skipped": counts["skipped"],
        "enqueued": counts["enqueued"],
        "in_flight": run.in_flight,
        "written": written,
        "ok": counts["objects_ok"],
        "failed": counts["objects_failed"],
        "bad_lines": counts["bad_lines"],
        "total": total,
        "images_per_s": None if rate is None else round(rate, 2),
        "eta_s": None if eta is None else round(eta, 1),
    }


class Display:
    def __init__(self, name: str, *, live: bool) -> None:
        self.name = name
        self.rate = Rate()
        self.last_shown = 0.0
        self.latest: dict[str, Any] | None = None
        self._live: Any = None
        if live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._render({}), console=Console(file=sys.stderr), auto_refresh=False
            )
            self._live.start()

    def collected(self, images: int) -> None:
        self.rate.add(images)

    def update(self, run: Run, exhausted: bool) -> None:
        now = time.monotonic()
        every = _REDRAW_S if self._live is not None else LOG_EVERY_S
        final = run.finished
        if now - self.last_shown < every and not final:
            return
        self.last_shown = now
        self.latest = numbers(run, exhausted, self.rate.per_second())
        if self._live is not None:
            self._live.update(self._render(self.latest), refresh=True)
        else:
            log.info("backfill_progress", **self.latest)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self, shown: dict[str, Any]) -> Any:
        from rich.table import Table

        table = Table(title=f"backfill {self.name}", show_header=True, expand=False)
        for column in (
            "state",
            "listed",
            "enqueued",
            "in flight",
            "written",
            "failed",
            "images/s",
            "ETA",
        ):
            table.add_column(column, justify="right")
        if not shown:
            table.add_row("starting", *[""] * 7)
            return table
        total = shown["total"]
        written = f"{shown['written']}" + (f" / {total}" if total is not None else "")
        table.add_row(
            shown["state"],
            str(shown["listed"]),
            str(shown["enqueued"]),
            str(shown["in_flight"]),
            written,
            str(shown["failed"]),
            "-" if shown["images_per_s"] is None else f"{shown['images_per_s']:.1f}",
            _duration(shown["eta_s"]),
        )
        return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
