"""The audit of which labelled codes in a real-photo set are QR symbols at all
(worker.bench.real_audit), and the bench's recall over them.

A stock illustration of a QR code has finder patterns, timing and format information but no
Reed-Solomon codeword behind its data modules; a photographed symbol has one. The audit
sets a box aside only when a sharp grid fits every known module and the data still do not
correct at full capacity, and no peer reads it: anything less certain counts as genuine.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno

from worker.bench import accuracy, real_audit
from worker.bench.false_reads import render
from worker.engine.qr.tables import layout


def _symbol(version: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A real symbol and an illustration made from it: the same function patterns, format
    and version information, the data modules drawn at random."""
    symbol = segno.make_qr("https://example.com/pay", version=version, error="l")
    modules = np.array(symbol.matrix, dtype=bool)
    noise = np.random.default_rng(version).random(modules.shape) < 0.5
    return modules, np.where(layout(version).function, modules, noise)


def _photo(modules: np.ndarray, blur: float = 0.8) -> np.ndarray:
    image = cv2.GaussianBlur(render(modules, 6), (0, 0), blur)
    return cv2.copyMakeBorder(image, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=255)


def test_an_illustration_is_set_aside_and_the_symbol_it_copies_is_not() -> None:
    genuine, illustration = _symbol()
    decision, why = real_audit.verdict(real_audit.grids(_photo(illustration)), {})
    assert decision == "not_a_symbol", why
    assert "Reed-Solomon fails" in why
    decision, why = real_audit.verdict(real_audit.grids(_photo(genuine)), {})
    assert decision == "genuine" and "correct at full Reed-Solomon capacity" in why


def test_a_blurred_illustration_counts_as_genuine() -> None:
    """Too blurred to judge module by module: when in doubt, a code counts."""
    _, illustration = _symbol()
    decision, _ = real_audit.verdict(real_audit.grids(_photo(illustration, blur=5.0)), {})
    assert decision == "genuine"


def test_what_a_peer_reads_is_genuine_whatever_the_grid_says() -> None:
    _, illustration = _symbol()
    evidence = real_audit.grids(_photo(illustration))
    decision, why = real_audit.verdict(evidence, {"wechat": "https://example.com/pay"})
    assert decision == "genuine" and "wechat" in why


def test_the_stored_audit_names_its_command_and_every_box() -> None:
    stored = json.loads(real_audit.AUDIT_FILE.read_text())
    assert stored["folder"] == "qr-photos-val"
    assert stored["command"].startswith("python -m worker.bench.real_audit")
    assert len(stored["boxes"]) == 207
    for row in stored["boxes"]:
        assert row["verdict"] in {"genuine", "not_a_symbol"} and row["why"]
        if row["verdict"] == "not_a_symbol":
            assert not row["peers"]
    assert real_audit.set_aside("another-folder") == set()


def test_the_bench_reports_recall_over_qr_symbols_beside_the_plain_one(tmp_path: Path) -> None:
    audit = tmp_path / "audit.json"
    audit.write_text(
        json.dumps(
            {
                "folder": "photos",
                "boxes": [
                    {"image": "a", "box": 1, "verdict": "not_a_symbol", "why": "x", "peers": {}},
                    {"image": "b", "box": 0, "verdict": "genuine", "why": "y", "peers": {}},
                ],
            }
        )
    )
    images = [
        {"source": "photos", "name": "a", "found": [True, False]},
        {"source": "photos", "name": "b", "found": [False]},
    ]
    row = accuracy._audited(images, audit)
    assert row == {"symbol_recall": pytest.approx(1 / 2), "set_aside": ["a_1"]}
