"""The benchmark harness, on a tiny corpus: scoring, misread detection, absent peers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.synth import digital_invoice, no_code_invoice
from worker.bench import accuracy, readers, scoring
from worker.bench.readers import Read
from worker.bench.sources import Truth, corpus_folder, text_folder, yolo_folder


def test_an_image_counts_as_decoded_only_when_every_code_is_exact() -> None:
    truth = Truth(payloads=(b"alpha", b"beta"))
    both = scoring.score([Read(b"alpha", None, None), Read(b"beta", None, None)], truth)
    one = scoring.score([Read(b"alpha", None, None)], truth)
    assert both.decoded
    assert (one.decoded, one.correct, one.expected) == (False, 1, 2)


def test_content_that_is_not_on_the_page_is_a_misread() -> None:
    result = scoring.score(
        [Read(b"alpha", None, None), Read(b"alpHa", None, None)], Truth((b"alpha",))
    )
    assert result.decoded
    assert result.misreads == 1


def test_reads_on_a_page_without_codes_are_false_reads() -> None:
    result = scoring.score([Read(b"ghost", None, None)], Truth())
    assert (result.false_reads, result.misreads) == (1, 0)


def test_text_only_peers_are_matched_by_text() -> None:
    payload = "Großhandel Weiß".encode()
    assert scoring.score([Read(None, "Großhandel Weiß", None)], Truth((payload,))).decoded
    assert scoring.score([Read(None, "Grosshandel", None)], Truth((payload,))).misreads == 1


def test_box_only_truth_counts_codes_found_at_the_labelled_place() -> None:
    truth = Truth(boxes=((10, 10, 110, 110), (300, 300, 400, 400)), has_content=False)
    near = Read(b"x", None, ((12, 12), (108, 12), (108, 108), (12, 108)))
    far = Read(b"y", None, ((500, 500), (600, 500), (600, 600), (500, 600)))
    result = scoring.score([near, far], truth)
    assert (result.correct, result.expected, result.decoded) == (1, 2, False)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for sample in (digital_invoice(900), no_code_invoice(901)):
        (corpus / f"{sample.name}.{sample.extension}").write_bytes(sample.data)
        (corpus / f"{sample.name}.json").write_text(json.dumps(sample.ground_truth()))
    return corpus


def test_sources_read_the_three_folder_conventions(tiny: Path, tmp_path: Path) -> None:
    items = list(corpus_folder(tiny))
    assert sorted(len(i.truth.payloads) for i in items) == [0, 1]
    texts = tmp_path / "texts"
    texts.mkdir()
    sample = digital_invoice(902, payload_kind="tax_url")
    (texts / "a.png").write_bytes(sample.data)
    (texts / "a.txt").write_text(sample.codes[0].text)
    assert next(text_folder(texts)).truth.texts == (sample.codes[0].text,)
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    (yolo / "images" / "p.png").write_bytes(sample.data)
    (yolo / "labels" / "p.txt").write_text("0 0.5 0.5 0.2 0.1\n")
    (box,) = next(yolo_folder(yolo)).truth.boxes
    assert box[0] == pytest.approx(0.4 * sample.width)


def test_the_harness_scores_a_reader_in_its_own_process(tiny: Path) -> None:
    run = accuracy.run_reader("cascade (classical)", [tiny])
    assert "absent" not in run
    assert run["ready_s"] > 0
    assert run["peak_rss_mb"] > 10
    summary = accuracy.summarise(run)["digital"]
    assert summary["decode_rate"] == 1.0
    assert summary["misreads"] == 0


def test_a_peer_that_cannot_load_is_reported_absent_not_zero(monkeypatch, tiny: Path) -> None:
    def broken() -> readers.Reader:
        raise ImportError("No module named 'not_installed'")

    monkeypatch.setitem(readers.READERS, "broken-peer", broken)
    with pytest.raises(readers.Absent):
        readers.load("broken-peer")
    runs = [{"reader": "broken-peer", "images": [], "absent": "not installed"}]
    text = accuracy.render(runs, {}, None, "qrw bench --quick")  # type: ignore[arg-type]
    assert "Absent" in text
    assert "broken-peer: not installed" in text


def test_an_unknown_reader_run_as_a_process_says_absent(tiny: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "worker.bench.reader_process", "no-such-reader", str(tiny)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout.splitlines()[0])["type"] == "absent"


def test_keep_reports_stored_peer_runs_and_only_reruns_the_named_readers(
    tiny: Path, capsys
) -> None:
    from models.synth.corpus import CATEGORIES

    # The tiny corpus, stamped as if generated, so nothing is generated here.
    stamp = {"per_category": 1, "seed": 0, "categories": list(CATEGORIES)}
    (tiny / "corpus.json").write_text(json.dumps(stamp))
    options = ["--per-category", "1", "--corpus", str(tiny), "--real"]
    accuracy.main([*options, "--readers", "zxing-cpp"])
    capsys.readouterr()
    accuracy.main([*options, "--readers", "cascade (classical)", "--keep"])
    report = capsys.readouterr().out
    assert "zxing-cpp: " in report and "(stored)" in report
    assert "| category | cascade (classical) | zxing-cpp |" in report
    # Without --keep only what was run is reported.
    accuracy.main([*options, "--readers", "cascade (classical)"])
    assert "zxing-cpp" not in capsys.readouterr().out.split("### Decode rate")[1]
