"""What ops see of the queue: `qrw status` and the workers' Prometheus endpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.synth import digital_invoice
from tests.conftest import reply_list, wait_results
from tests.services import RedisServer, free_port, wait_until
from worker import metrics
from worker.queue import persistence, producer


@pytest.fixture
def forgetful_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that keeps nothing across a restart: no AOF, no RDB save points."""
    server = RedisServer(tmp_path / "forgetful-redis", persistence=False)
    yield server
    server.stop()


def qrw(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": redis_url, "QRW_QUEUES": "qr-shared"},
        check=False,
    )


def test_status_shows_queues_workers_and_recent_throughput(
    redis_server: RedisServer, shared_queue: str, file_root: Path
) -> None:
    path = file_root / "status.png"
    path.write_bytes(digital_invoice(60).data)
    reply_to = reply_list()
    for _ in range(5):
        producer.enqueue(
            redis_server.client(),
            {"image": f"file://{path}", "reply_to": reply_to},
            queue=shared_queue,
        )
    wait_results(redis_server, reply_to, 5)
    out = qrw("status", "--json", redis_url=redis_server.url)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["redis"] == "ok"
    queue = next(q for q in report["queues"] if q["queue"] == shared_queue)
    assert queue["queued"] >= 0 and queue["failed"] >= 0
    assert len(report["workers"]) >= 2
    assert report["throughput"]["1m"]["jobs"] >= 5
    text = qrw("status", redis_url=redis_server.url).stdout
    assert shared_queue in text and "workers:" in text


def test_status_says_when_redis_is_away() -> None:
    out = qrw("status", "--json", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert out.returncode == 1
    assert json.loads(out.stdout)["redis"].startswith("unreachable")


def test_a_worker_pool_serves_its_processes_metrics_and_the_queue_gauges(
    redis_server: RedisServer, start_worker, file_root: Path
) -> None:
    port = free_port()
    queue = "qr-metrics"
    start_worker(redis_server.url, queue, workers=2, QRW_METRICS_PORT=str(port))
    path = file_root / "metrics.png"
    path.write_bytes(digital_invoice(61).data)
    reply_to = reply_list()
    for _ in range(4):
        producer.enqueue(
            redis_server.client(), {"image": f"file://{path}", "reply_to": reply_to}, queue=queue
        )
    wait_results(redis_server, reply_to, 4)

    def scrape() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.TransportError:
            return ""

    text = wait_until(lambda: "qrw_jobs_total" in scrape() and scrape(), 30, "worker metrics")
    assert 'qrw_jobs_total{outcome="ok"} 4.0' in text  # summed over both processes
    # Created at 0 when a worker starts, so an alert's increase() sees the first one.
    assert 'qrw_jobs_total{outcome="worker_lost"} 0.0' in text
    assert 'qrw_scans_total{outcome="ok",source="queue"} 4.0' in text
    assert 'qrw_codes_read_total{source="queue",stage="fast"} 4.0' in text
    assert text.count('qrw_codes_by_scheme_total{scheme="') >= 1  # one scheme, or "none"
    assert f'qrw_queue_depth{{queue="{queue}"}} 0.0' in text
    assert f'qrw_queue_failed{{queue="{queue}"}}' in text
    assert "qrw_model_info{" in text
    assert 'qrw_redis_persistence{mode="aof"} 1.0' in text
    # The pool's own memory (multiprocess mode exports no process metrics): by role, PSS
    # and RSS, read from /proc at scrape time.
    assert 'qrw_pool_processes{role="supervisor"} 1.0' in text
    assert 'qrw_pool_processes{role="worker"} 2.0' in text
    pss = re.search(r'qrw_pool_memory_bytes\{kind="pss",role="worker"\} ([0-9.e+]+)', text)
    assert pss is not None and float(pss.group(1)) > 10e6
    assert f'qrw_queue_oldest_seconds{{queue="{queue}"}} 0.0' in text  # nothing waits


def test_the_queue_gauges_say_how_long_the_oldest_job_has_waited(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    queue = "qr-nobody-serves"
    producer.enqueue(client, {"image": "file:///nowhere.png"}, queue=queue)
    time.sleep(1.2)
    producer.enqueue(client, {"image": "file:///nowhere.png"}, queue=queue)
    gauges = {
        sample.labels.get("queue"): sample.value
        for family in metrics.QueueCollector(client, [queue, "qr-empty"]).collect()
        if family.name == "qrw_queue_oldest_seconds"
        for sample in family.samples
    }
    assert 1.0 < gauges[queue] < 60.0  # the first job's age, not the second's
    assert gauges["qr-empty"] == 0.0


def test_status_says_whether_queued_jobs_would_survive_a_redis_restart(
    redis_server: RedisServer, forgetful_redis: RedisServer
) -> None:
    kept = json.loads(qrw("status", "--json", redis_url=redis_server.url).stdout)["persistence"]
    assert kept["mode"] == "aof"
    assert kept["survives_restart"] is True
    assert "persistence: aof" in qrw("status", redis_url=redis_server.url).stdout

    out = qrw("status", "--json", redis_url=forgetful_redis.url)
    assert out.returncode == 0
    lost = json.loads(out.stdout)["persistence"]
    assert lost == {
        "mode": "none",
        "survives_restart": False,
        "appendonly": "no",
        "save": "",
        "detail": "",
    }
    text = qrw("status", redis_url=forgetful_redis.url).stdout
    assert "persistence: NONE: queued jobs and results are lost when Redis restarts" in text


def test_the_persistence_check_follows_config_changes_made_at_runtime(
    forgetful_redis: RedisServer,
) -> None:
    client = forgetful_redis.client()
    assert persistence.check(client).mode is persistence.Mode.NONE
    client.config_set("save", "3600 1")
    snapshots = persistence.check(client)
    assert (snapshots.mode, snapshots.survives_restart) == (persistence.Mode.RDB, True)
    assert "a crash loses jobs" in snapshots.summary()
    client.config_set("appendonly", "yes")
    assert persistence.check(client).mode is persistence.Mode.AOF_RDB
    client.config_set("save", "")
    assert persistence.check(client).gauge == 1
    client.config_set("appendonly", "no")  # ends the AOF rewrite it started, for a quick stop


def test_status_reports_persistence_as_unknown_where_config_is_disabled(tmp_path: Path) -> None:
    """Managed Redis services often rename or disable CONFIG: not knowing is no error."""
    server = RedisServer(tmp_path / "managed", extra_args=("--rename-command", "CONFIG", ""))
    try:
        out = qrw("status", "--json", redis_url=server.url)
        assert out.returncode == 0, out.stderr
        found = json.loads(out.stdout)["persistence"]
        assert found["mode"] == "unknown"
        assert found["survives_restart"] is None
        assert "CONFIG" in found["detail"]
        assert "persistence: unknown" in qrw("status", redis_url=server.url).stdout
    finally:
        server.stop()


def test_a_worker_on_redis_without_persistence_says_so_in_its_log_and_metrics(
    forgetful_redis: RedisServer, start_worker, file_root: Path
) -> None:
    """Measured: Redis without persistence lost all 200 queued jobs on a restart. The
    worker still serves (ops may be fixing Redis), but says so loudly."""
    port = free_port()
    worker = start_worker(forgetful_redis.url, "qr-forgetful", QRW_METRICS_PORT=str(port))

    def scrape() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.TransportError:
            return ""

    text = wait_until(lambda: "qrw_redis_persistence" in (t := scrape()) and t, 60, "metrics")
    assert 'qrw_redis_persistence{mode="none"} 0.0' in text
    lines = [
        json.loads(line) for line in worker.log.read_text().splitlines() if line.startswith("{")
    ]
    (event,) = [line for line in lines if line.get("event") == "redis_not_persistent"]
    assert event["level"] == "error"
    assert event["appendonly"] == "no" and event["save"] == ""
    # It still works: a job gets its result.
    path = file_root / "forgetful.png"
    path.write_bytes(digital_invoice(62).data)
    reply_to = reply_list()
    producer.enqueue(
        forgetful_redis.client(),
        {"image": f"file://{path}", "reply_to": reply_to},
        queue="qr-forgetful",
    )
    assert wait_results(forgetful_redis, reply_to, 1)[0]["ok"] is True
