"""The same-session comparison of two trees on the speed bench's own pages (issue 19: digital
invoices keep their speed, and a change that makes them faster must leave what is read,
`complete` and unread exactly as it was).

`python -m worker.bench.speed --write FOLDER` saves the speed sets as folders that
`worker.bench.sources` reads; `python -m worker.bench.ab` records each scan's `complete` and
unread places beside its codes, and `--compare` names every image where they differ.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from models.synth import digital_invoice
from worker.bench import ab, sources, speed

ROOT = Path(__file__).resolve().parents[1]


def test_the_speed_sets_are_written_as_folders_the_benchmark_sources_read(
    tmp_path: Path,
) -> None:
    sets = {
        "digital 2 MP JPEG, grey": [digital_invoice(1000 + i, fmt="jpeg") for i in range(2)],
        "digital 2 MP PNG, colour": [
            digital_invoice(2500 + i, fmt="png", color=True) for i in range(2)
        ],
    }
    folders = speed.write_sets(sets, tmp_path)
    assert [f.name for f in folders] == ["JPEG_grey", "PNG_colour"]
    for folder, samples in zip(folders, sets.values(), strict=True):
        items = list(sources.detect(folder))
        assert [item.path.read_bytes() for item in items] == [s.data for s in samples]
        assert [item.truth.payloads for item in items] == [
            tuple(c.payload for c in s.codes) for s in samples
        ]
        assert {item.category for item in items} == {folder.name}


def test_the_speed_bench_writes_its_sets_on_request_and_times_nothing(tmp_path: Path) -> None:
    assert speed.main(["--count", "1", "--sets", "PNG", "--write", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PNG_colour", "PNG_grey"]
    assert len(list(sources.detect(tmp_path / "PNG_grey"))) == 1


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("pages")
    # A speed-bench page: one code, read by the fast pass; complete, nothing unread.
    speed.write_sets({"digital 2 MP JPEG, grey": [digital_invoice(1000, fmt="jpeg")]}, folder)
    out = folder / "ab.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QRW_BACKEND", "none")  # no detector to load: the fast pass reads these
        ab.run(out, [ROOT, ROOT], [folder / "JPEG_grey"], 1, set(), False)
    return json.loads(out.read_text())


def test_each_scan_records_complete_and_its_unread_places(ab_run: dict) -> None:
    for side in ab_run["sides"]:
        (record,) = side
        assert record["complete"] is True
        assert record["unread"] == []
        assert record["correct"] == record["expected"] == 1


def test_compare_names_the_images_whose_complete_or_unread_places_differ(
    ab_run: dict, tmp_path: Path
) -> None:
    same = tmp_path / "same.json"
    same.write_text(json.dumps(ab_run))
    assert "0 of 1 images whose `complete` or unread places differ" in ab.compare(same)

    a, b = (side[0] for side in ab_run["sides"])
    place = {"quad": [[0, 0], [9, 0], [9, 9], [0, 9]], "page": 0, "reason": "not_decoded"}
    changed = dict(ab_run, sides=[[a], [dict(b, complete=False, unread=[place])]])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(changed))
    text = ab.compare(other)
    assert "1 of 1 images whose `complete` or unread places differ" in text
    assert f"- {a['name']} (JPEG_grey): A complete True, 0 unread; B complete False, 1 unread" in (
        text
    )
    # The same codes all the same: a change of `complete` alone is no change of reads.
    assert "0 images whose codes differ" in text
    payload = digital_invoice(1000, fmt="jpeg").codes[0].payload
    assert a["codes"] == [base64.b64encode(payload).decode()]


def test_sets_named_by_format_are_the_digital_ones_of_that_format(tmp_path: Path) -> None:
    # `--sets JPEG,PNG` is how the issue-19 runs time digital invoices: the phone photo
    # set, also a JPEG, is not one of them (it used to come along, and take most of the run).
    assert speed.main(["--count", "1", "--sets", "JPEG,PNG", "--write", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "JPEG_colour",
        "JPEG_grey",
        "PNG_colour",
        "PNG_grey",
    ]
