"""`python -m worker.bench.backfill`, the measurement behind docs/benchmarks.md's Backfill
section: its stand-in for the workers answers as a worker does, and a tiny run of the
throughput and listing sections writes its section with complete outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.services import RedisServer
from worker.backfill import Options, StoredObject, output, runner
from worker.bench import backfill as bench
from worker.queue import names, producer

REPO = Path(__file__).resolve().parents[1]


def test_the_stand_in_answers_a_backfill_job_with_a_result_the_output_accepts(
    redis_server: RedisServer,
) -> None:
    queue = "bench-stand-in"
    client = redis_server.client()
    stand_in = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.bench.backfill",
            "--stand-in",
            redis_server.url,
            "--stand-in-queue",
            queue,
        ],
        cwd=REPO,
    )
    try:
        objects = [
            StoredObject(f"s3://archive/in/{i}.png", f"in/{i}.png", f"e{i}", 9) for i in range(3)
        ]
        payload = runner.job_payload("bench-smoke", objects, Options())
        job_id = producer.enqueue(client, payload, queue=queue)
        stream_before = client.xlen(names.RESULTS_STREAM)
        reply = producer.wait_for_reply(client, payload["reply_to"], 30)
    finally:
        stand_in.kill()
        stand_in.wait(10)
    assert reply is not None and reply["job_id"] == job_id
    lines = output.object_lines(reply, objects)
    assert [line["key"] for line in lines] == ["in/0.png", "in/1.png", "in/2.png"]
    assert all(line["ok"] and line["codes"] == [] for line in lines)
    # Delivered as the payload asks: a short-lived result, nothing in the results stream.
    assert 0 < client.ttl(names.result_key(job_id)) <= payload["result_ttl"]
    assert client.xlen(names.RESULTS_STREAM) == stream_before


def test_a_tiny_benchmark_run_writes_throughput_and_listing_with_every_object_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "benchmarks.md"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.bench.backfill",
            "--smoke",
            "--only",
            "throughput",
            "--only",
            "listing",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = out.read_text()
    assert "<!-- begin:backfill -->" in text and "<!-- end:backfill -->" in text
    assert (
        "Command: `python -m worker.bench.backfill --smoke --only throughput --only listing`"
        in text
    )
    # Each listing row's output held every object exactly once.
    rows = re.findall(
        r"^\| (?:LIST|Inventory) \| ([\d,]+) \|.*\| ([\d,]+) \(([\d,]+)\) \|", text, re.M
    )
    assert [objects for objects, _, _ in rows] == ["100", "300", "300"]  # LIST x2, Inventory
    for objects, lines, distinct in rows:
        assert objects == lines == distinct
    results = json.loads((tmp_path / "benchmarks-backfill.json").read_text())
    assert {run["kind"] for run in results["throughput"]["runs"]} == {"queue", "backfill"}
    # With nothing answering, the run stops at --max-in-flight jobs, whatever the archive.
    for stalled in results["listing"]["stalled"]:
        assert stalled["jobs"] == stalled["max_in_flight"]


def test_a_section_re_run_with_only_keeps_the_stored_sections_and_says_who_measured_each() -> None:
    # Regression: `--only listing --out docs/benchmarks.md` used to rewrite the whole Backfill
    # section (and its JSON) with the listing alone, dropping the throughput measured before.
    full = {"command": "python -m worker.bench.backfill", "machine": "m1"}
    stored = {
        "throughput": {"images": 1},
        "resume": {"objects": 2},
        "measured": {"throughput": full, "resume": full},
    }
    again = {"command": "python -m worker.bench.backfill --only resume", "machine": "m2"}
    merged = bench.merge(stored, {"resume": {"objects": 3}, "measured": {"resume": again}})
    assert merged["throughput"] == {"images": 1} and merged["resume"] == {"objects": 3}
    assert merged["measured"] == {"throughput": full, "resume": again}
    # A file written before sections recorded their command is credited to the plain one.
    old = bench.merge({"listing": {}}, {"resume": {}, "measured": {"resume": again}})
    assert old["measured"]["listing"]["command"] == "python -m worker.bench.backfill"


def test_the_dedup_section_measures_the_set_of_enqueued_objects_as_the_runner_uses_it(
    tmp_path: Path,
) -> None:
    out = tmp_path / "benchmarks.md"
    run = subprocess.run(
        [sys.executable, "-m", "worker.bench.backfill", "--smoke", "--only", "dedup", "--out",
         str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "### Objects named twice: the set of enqueued objects" in out.read_text()
    rows = json.loads((tmp_path / "benchmarks-backfill.json").read_text())["dedup"]["rows"]
    # Filled as a run of 10^8 objects fills it (~95 per hash), then a small run's one each;
    # every object was found again, and dropping the set left nothing.
    assert [round(row["per_hash"]) for row in rows] == [95, 1]
    assert all(row["encoding"] == "listpack" and row["left"] == 0 for row in rows)
    assert 8 <= rows[0]["bytes_per_object"] < 64
