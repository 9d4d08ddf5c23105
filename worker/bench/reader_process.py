"""One reader over a set of image folders, in a process of its own.

    python -m worker.bench.reader_process READER [--limit N] FOLDER...

Prints JSON lines: `ready` once the reader is loaded (the parent times start-to-ready
from the process start), one line per image, then `end` with the peak RSS. A reader
that cannot load prints `absent` with the reason. Running each reader in its own
process is what makes start-up and memory comparable.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

from worker import procfs
from worker.bench import readers, scoring, sources


def _status_mb(field: str) -> float:
    # /proc rather than getrusage: ru_maxrss survives exec, so it would report the
    # parent's peak; VmHWM belongs to this process image alone.
    kib = procfs.status_kib(os.getpid(), field)
    return float("nan") if kib is None else kib / 1024.0


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def main(argv: list[str]) -> int:
    name, rest = argv[0], argv[1:]
    limit = None
    if rest[:1] == ["--limit"]:
        limit, rest = int(rest[1]), rest[2:]
    folders = [Path(f) for f in rest]
    try:
        reader = readers.load(name)
    except readers.Absent as exc:
        emit({"type": "absent", "reason": str(exc)})
        return 0
    emit({"type": "ready", "rss_mb": _status_mb("VmRSS")})
    # The limit applies per real-photo folder, so a quick run still sees every source.
    for folder in folders:
        # The generated corpus is already sized by its own parameters.
        cap = None if (folder / "corpus.json").exists() else limit
        for item in itertools.islice(sources.detect(folder), cap):
            data = item.path.read_bytes()
            started = time.perf_counter()
            try:
                reads = reader(data)
                error = None
            except Exception as exc:  # a peer crashing on one image is a result, not the end
                reads, error = [], repr(exc)[:200]
            elapsed = (time.perf_counter() - started) * 1000.0
            result = scoring.score(reads, item.truth)
            emit(
                {
                    "type": "image",
                    "source": folder.name,
                    "name": item.name,
                    "category": item.category,
                    "ms": elapsed,
                    "expected": result.expected,
                    "correct": result.correct,
                    "misreads": result.misreads,
                    "false_reads": result.false_reads,
                    "decoded": result.decoded,
                    "found": list(result.found),
                    "content": item.truth.has_content,
                    "stages": [r.stage for r in reads if r.stage],
                    "error": error,
                }
            )
    emit({"type": "end", "peak_rss_mb": _status_mb("VmHWM")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
