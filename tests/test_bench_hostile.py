"""`python -m worker.bench.hostile`, the measurement behind docs/reliability.md, on two
small inputs: it starts its own Redis and worker pool, and reports each input's outcome,
seconds and peak memory, and every promise as PASS or FAIL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_hostile_benchmark_reports_outcome_seconds_and_peak_memory_per_input(
    tmp_path: Path,
) -> None:
    out = tmp_path / "reliability.md"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.bench.hostile",
            "--sections",
            "queue-files",
            "--cases",
            "invoice.png,empty.png",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = out.read_text()
    assert report.startswith("# Reliability under hostile input")
    assert "Produced by `python -m worker.bench.hostile" in report
    rows = {
        cells[0]: cells
        for line in report.splitlines()
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    # input | what | outcome | expected | seconds | peak MiB | RSS before MiB | results | ...
    assert rows["invoice.png"][2] == "ok"
    assert rows["empty.png"][2] == "empty_input"
    for name in ("invoice.png", "empty.png"):
        assert float(rows[name][4]) >= 0.0
        assert 0.0 < float(rows[name][5]) < 1024.0  # MiB, the worker that ran the job
        assert rows[name][7] == "1"  # exactly one result
    verdicts = [cells[1] for cells in rows.values() if cells[0].startswith("Every ")]
    assert verdicts and all(v in ("PASS", "**FAIL**", "n/a") for v in verdicts)
    no_death = next(c for k, c in rows.items() if k.startswith("No worker process dies"))
    assert no_death[1] == "PASS", report
    assert run.returncode == 0, report
