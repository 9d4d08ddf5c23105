"""`python -m worker.bench.redis_capacity` at a tiny size, on real processes: a real
redis-server, pools of stand-in workers (our worker loop, only the engine replaced), and
its accounting: every job one result, or the run fails."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from worker.bench import redis_capacity
from worker.harness import RedisServer
from worker.queue import names


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    folder = tmp_path_factory.mktemp("capacity")
    out = folder / "benchmarks.md"
    # Another command's section, which the run must leave as it is.
    out.write_text("# Benchmarks\n\n<!-- begin:queue -->\nqueue numbers\n<!-- end:queue -->\n")
    report = folder / "report.json"
    argv = [
        *("--workers", "1,4", "--jobs", "150", "--batch", "5", "--queued", "200"),
        *("--slow-scan-ms", "20", "--idle-s", "0.5", "--duties", "0,0.5"),
        *("--steady-s", "2", "--rounds", "1", "--latency-workers", "2"),
        *("--json", str(report), "--out", str(out), "--logs", str(folder / "logs")),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "worker.bench.redis_capacity", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(report.read_text()), out.read_text()


def test_every_pool_runs_every_job_once_through_the_real_worker_loop(tiny_run) -> None:
    report, _ = tiny_run
    pools = report["pools"]
    # 1 and 4 workers with no scan time, then the largest pool again with a 20 ms scan.
    assert [(p["workers"], p["scan_ms"]) for p in pools] == [(1, 0), (4, 0), (4, 20)]
    for pool in pools:
        single, batched = pool["single"], pool["batched"]
        assert (single["jobs"], single["results"]) == (150, 150)
        assert (batched["jobs"], batched["results"], batched["images_per_job"]) == (30, 30, 5)
        # The commands are the worker's and the producer's own: the pop, the admission's
        # reads, the result's Lua publish and stream entry, the reply read.
        commands = single["commands"]
        for command in ("blmove", "hmget", "evalsha", "xadd", "blpop", "rpush"):
            assert commands.get(command, 0) >= 0.9, command
        assert single["commands_per_job"] > 20
        assert single["redis_cpu_us_per_job"] > 0
        assert pool["idle_commands_per_worker_s"] > 0
        assert pool["pool_pss_mib"] > 0


def test_memory_per_queued_job_grows_with_the_images_it_names(tiny_run) -> None:
    report, _ = tiny_run
    assert 200 < report["queued_bytes_single"] < report["queued_bytes_batched"] < 20_000


def test_latency_is_measured_at_each_share_of_the_core_the_spin_takes(tiny_run) -> None:
    report, _ = tiny_run
    rows = report["near_saturation"]
    assert [row["duty"] for row in rows] == [0.0, 0.5]
    assert rows[0]["spin_share"] == 0.0
    # The spin held Redis for some of the time (a loaded host keeps it below the 50% asked).
    assert 0 < rows[1]["spin_share"] < 0.6
    for row in rows:
        assert row["jobs"] == 80
        assert row["overhead_median_ms"] > 0
        assert row["ping_median_ms"] > 0


def test_the_section_goes_between_its_markers_and_leaves_the_others(tiny_run) -> None:
    _, text = tiny_run
    assert "<!-- begin:queue -->\nqueue numbers\n<!-- end:queue -->" in text
    section = text.split("<!-- begin:redis-capacity -->")[1].split("<!-- end:redis-capacity -->")[0]
    assert "Command: `python -m worker.bench.redis_capacity --workers 1,4" in section
    assert "Headline:" in section
    assert "load average" in section
    assert "\n| 4 | 0 | " in section
    assert "\n| 4 | 20 | " in section


def test_a_job_with_two_results_or_none_fails_the_run(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", fsync="everysec")
    try:
        client = server.client()
        reply_to = names.reply_key(str(uuid.uuid4()))
        ok = {"job_id": "a", "ok": True}
        client.rpush(reply_to, json.dumps(ok), json.dumps(ok))
        with pytest.raises(redis_capacity.CountMismatch, match="1 jobs: 2 results, for 1 of"):
            redis_capacity.collect(client, reply_to, ["a"], timeout_s=5)
        client.delete(reply_to)
        with pytest.raises(redis_capacity.CountMismatch, match="1 of 1 results missing"):
            redis_capacity.collect(client, reply_to, ["b"], timeout_s=1)
    finally:
        server.stop()
