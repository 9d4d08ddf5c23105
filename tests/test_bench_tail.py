"""`python -m worker.bench.tail`: where the corpus p95 comes from, and what a cap would cost."""

from __future__ import annotations

from pathlib import Path

from models.synth.corpus import write_corpus
from worker.bench import sources
from worker.bench.tail import Scan, report, scans
from worker.engine import Engine, cascade


def test_each_code_is_stamped_when_the_cascade_adds_it(engine: Engine, tmp_path: Path) -> None:
    write_corpus(tmp_path, ["digital", "none"], per_category=2)
    added = cascade.Findings.add_code
    results = list(scans([tmp_path], engine))
    assert [s.category for s in results] == ["digital", "digital", "none", "none"]
    # Every code on these clean pages is read, each stamped once.
    truths = [item.truth.payloads for item in sources.detect(tmp_path)]
    for scan, payloads in zip(results, truths, strict=True):
        assert len(scan.reads_ms) == len(payloads)
        assert all(0.0 <= at <= scan.clock_ms for at in scan.reads_ms)
    # The engine is left as it was: the stamps are the bench's, not the runtime's.
    assert cascade.Findings.add_code is added


def test_a_cap_loses_the_codes_read_after_it_and_cuts_the_tail_to_it() -> None:
    quick = [Scan("digital", 10.0, 10.0, [5.0]) for _ in range(19)]
    slow = [Scan("curved", 200.0, 200.0, [180.0])]
    text = report(quick + slow)
    # 20 images: the p95 is the slowest, 200 ms; at half of it (100 ms) the curved code,
    # read at 180 ms, is lost and no scan runs past 100 ms.
    assert "p95 200.0 ms" in text
    assert "| 0.50 | 100.0 | 100.0 | 1 | curved 1 |" in text
    assert "| 1.00 | 200.0 | 200.0 | 0 | - |" in text
