"""Processes as Linux's /proc shows them: children, trees, memory and CPU time.

Standard library only, and nothing runs at import: the supervisor reads its children
with it before it sets up the metrics (worker.metrics_env), and the harness, the
benchmarks and the tests read the same files the same way. A process that has exited
reads as nothing (no children, no memory, no ticks): every reader races its subject.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

MIB_KIB = 1024.0


def children(pid: int) -> list[int]:
    """`pid`'s children: every thread's list, since /proc lists a child under the thread
    that forked it (the shim starts PDF renderers from its scan threads) and an orphan
    under the thread that adopted it (the pool is a subreaper)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children before their own children."""
    found: list[int] = []
    todo = children(pid)
    while todo:
        current = todo.pop(0)
        found.append(current)
        todo.extend(children(current))
    return found


def tree(pid: int) -> list[int]:
    """`pid` and every process below it: RQ's scheduler is a worker's fork, and holds a
    copy-on-write share of that worker's pages."""
    return [pid, *descendants(pid)]


def cmdline(pid: int) -> bytes:
    """The command line, NUL-separated as the kernel keeps it; empty once it exited."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def status_kib(pid: int, key: str) -> int | None:
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_mib(pid: int) -> float | None:
    """The peak resident set (VmHWM) since the start or the last `reset_peak`."""
    kib = status_kib(pid, "VmHWM")
    return None if kib is None else kib / MIB_KIB


def rss_mib(pid: int) -> float | None:
    kib = status_kib(pid, "VmRSS")
    return None if kib is None else kib / MIB_KIB


def reset_peak(pid: int) -> None:
    # 5 resets the peak resident set size (VmHWM) to the current one.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time, in clock ticks (os.sysconf("SC_CLK_TCK") a second)."""
    try:
        # The command name in parentheses may hold spaces: count fields after it.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class Usage:
    """One process's memory (or a sum of several), MiB."""

    pss: float = 0.0
    rss: float = 0.0
    private: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.pss + other.pss, self.rss + other.rss, self.private + other.private)


def usage(pid: int) -> Usage:
    """From smaps_rollup: one read, the kernel sums every mapping. PSS is what a set of
    processes sharing pages (forks of one supervisor) really costs together."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss", "Private_Clean", "Private_Dirty"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return Usage()
    private = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return Usage(values.get("Pss", 0) / MIB_KIB, values.get("Rss", 0) / MIB_KIB, private / MIB_KIB)


def total(pids: list[int]) -> Usage:
    summed = Usage()
    for pid in pids:
        summed = summed + usage(pid)
    return summed
