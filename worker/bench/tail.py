"""Where the corpus p95 comes from, and what a cap on a page's time would cost in codes read
(issue 19: "corpus p95 at most 150 ms").

    python -m worker.bench.tail [FOLDER ...]   # default build/bench-corpus and qr-photos-val

Every image is scanned once by the default engine (onnx) in this process; each code is
stamped with the clock and CPU time since its scan began when the cascade adds it (the
findings' `add_code`, wrapped here: the engine itself records no such time). A scan cut at
a cap would have returned the codes stamped before it, so for each cap the report gives the
p95 such scans would have and the codes they would have lost, by category. The caps are
shares of the measured p95, so a run on a loaded machine (every time longer) reads the same.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from worker.bench import sources
from worker.bench.accuracy import DEFAULT_REAL
from worker.engine import Engine, cascade
from worker.engine.results import Code
from worker.settings import Settings

DEFAULT_CORPUS = Path("build/bench-corpus")
# Caps as shares of the measured clock p95.
SHARES = (1.0, 0.9, 0.8, 0.75, 0.7, 0.6, 0.5)


@dataclass
class Scan:
    category: str
    clock_ms: float
    cpu_ms: float
    reads_ms: list[float] = field(default_factory=list)  # clock time of each code added


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def scans(folders: Sequence[Path], engine: Engine) -> Iterator[Scan]:
    """One Scan an image, each code's time stamped as the cascade adds it."""
    stamps: list[float] = []
    added = cascade.Findings.add_code

    def stamped(findings: cascade.Findings, code: Code) -> bool:
        new = added(findings, code)
        if new:
            stamps.append(time.perf_counter())
        return new

    cascade.Findings.add_code = stamped  # type: ignore[method-assign]
    try:
        for folder in folders:
            for item in sources.detect(folder):
                data = item.path.read_bytes()
                stamps.clear()
                clock, cpu = time.perf_counter(), time.process_time()
                engine.scan(data)
                yield Scan(
                    item.category,
                    (time.perf_counter() - clock) * 1000.0,
                    (time.process_time() - cpu) * 1000.0,
                    [(stamp - clock) * 1000.0 for stamp in stamps],
                )
    finally:
        cascade.Findings.add_code = added  # type: ignore[method-assign]


def report(results: Sequence[Scan]) -> str:
    clock = [s.clock_ms for s in results]
    cpu = [s.cpu_ms for s in results]
    reads = sum(len(s.reads_ms) for s in results)
    p95 = _percentile(clock, 0.95)
    slowest = sorted(results, key=lambda s: -s.clock_ms)[: max(1, len(results) // 20)]
    lines = [
        f"{len(results)} images, {reads} codes read; clock median {_percentile(clock, 0.5):.1f} "
        f"ms, p95 {p95:.1f} ms; CPU median {_percentile(cpu, 0.5):.1f} ms, p95 "
        f"{_percentile(cpu, 0.95):.1f} ms (load {os.getloadavg()[0]:.1f})",
        "The slowest 5%, by category: "
        + ", ".join(f"{c} {n}" for c, n in Counter(s.category for s in slowest).most_common()),
        "",
        "| cap (share of p95) | cap ms | p95 with the cap, ms | codes lost | lost by category |",
        "|---|---|---|---|---|",
    ]
    for share in SHARES:
        cap = share * p95
        lost = Counter(s.category for s in results for at in s.reads_ms if at > cap)
        capped = _percentile([min(s.clock_ms, cap) for s in results], 0.95)
        by_category = ", ".join(f"{c} {n}" for c, n in sorted(lost.items())) or "-"
        lines.append(
            f"| {share:.2f} | {cap:.1f} | {capped:.1f} | {sum(lost.values())} | {by_category} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench.tail", description=__doc__)
    parser.add_argument("folders", nargs="*", type=Path)
    args = parser.parse_args(argv)
    folders = args.folders or [f for f in (DEFAULT_CORPUS, DEFAULT_REAL) if f.is_dir()]
    engine = Engine(Settings.from_env())
    engine.warm_up()
    print(report(list(scans(folders, engine))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
