"""The tools that compare trees and price work (worker.bench.ab, worker.bench.work_units): what
they print is what the docs' A/B runs and WORK_COSTS are made from, so they are run here as
the docs run them, on a folder of two plain codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import segno

from worker.engine import deadline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two codes, each an image and its exact text (sources.text_folder)."""
    path = tmp_path_factory.mktemp("codes")
    for index, text in enumerate(["INV-2026-0001", "https://pay.example/7"]):
        segno.make_qr(text).save(str(path / f"code-{index}.png"), scale=6, border=4)
        (path / f"code-{index}.txt").write_text(text)
    return path


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_ab_scans_each_image_with_both_trees_and_says_where_their_reads_differ(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ab.json"
    printed = _run("worker.bench.ab", str(out), str(ROOT), str(ROOT), str(folder))
    run = json.loads(out.read_text())
    assert [len(side) for side in run["sides"]] == [2, 2]
    for a, b in zip(*run["sides"], strict=True):
        assert a["name"] == b["name"] and a["correct"] == b["correct"] == 1
        assert a["codes"] == b["codes"] and a["work_units"] == b["work_units"]
    assert "Work units the same on 2 of 2 images." in printed
    assert "0 images whose codes differ:" in printed


def test_work_units_free_prints_a_table_that_prices_every_kind(folder: Path) -> None:
    """Pasted over WORK_COSTS, the table must keep the kinds its scans never charged (a plain
    code charges a zxing-cpp pass and nothing costly), or spend() raises on them later."""
    printed = _run("worker.bench.work_units", "--free", "--every", "1", str(folder))
    table = printed[printed.index("WORK_COSTS = {") :]
    for kind in deadline.WORK_COSTS:
        assert f'"{kind}": (' in table, kind
