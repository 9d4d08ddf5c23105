"""What ops see of the queue: `qrw status` and the workers' Prometheus endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from models.synth import digital_invoice
from tests.conftest import reply_list, wait_results
from tests.services import RedisServer, free_port, wait_until
from worker.queue import producer


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
    assert 'qrw_scans_total{outcome="ok",source="queue"} 4.0' in text
    assert 'qrw_codes_read_total{source="queue",stage="fast"} 4.0' in text
    assert f'qrw_queue_depth{{queue="{queue}"}} 0.0' in text
    assert f'qrw_queue_failed{{queue="{queue}"}}' in text
    assert "qrw_model_info{" in text
