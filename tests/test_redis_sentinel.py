"""Failover with Sentinel: a master, one replica and three Sentinels on loopback, a
`qrw worker --workers 2` pool and a steady producer, all finding the master through the
Sentinels (QRW_REDIS_SENTINELS), and the master SIGKILLed mid-run.

What is promised (docs/operations.md, *Redis in production*; docs/protocol.md,
*Replication*): the workers and the producer write to the promoted replica within
RECONNECT_BOUND_S of the SIGKILL (Sentinel's down-after-milliseconds, the election, a
client's next backed-off try), no worker process dies, and every job Redis acknowledged
(a replica confirmed it: WAIT 1) gets exactly one result. `qrw status`, `qrw enqueue` and a
backfill run through the Sentinels too, the backfill across a failover of its own.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from models.synth import digital_invoice
from tests.test_rust_producer import qr_producer  # noqa: F401  (a fixture: the built example)
from worker.bench.failover import QUEUE, RECONNECT_BOUND_S, FailoverRun
from worker.harness import Shim, wait_until
from worker.queue import runtime
from worker.settings import Settings

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailoverRun]:
    """The topology, the pool (2 workers) and the producer (10 jobs/s), for the module."""
    failover_run = FailoverRun(tmp_path_factory.mktemp("failover"), workers=2, rate=10)
    yield failover_run
    failover_run.close()


def qrw(
    run: FailoverRun, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **run.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_failover_under_load_loses_no_acknowledged_job_and_no_worker(run: FailoverRun) -> None:
    failovers = run.run(failovers=1, every=6)
    books = run.accounting()

    (failover,) = failovers
    assert failover["promoted"] != failover["killed"]
    # Both sides wrote to the promoted replica within the bound, measured from the SIGKILL.
    assert failover["producer_s"] <= RECONNECT_BOUND_S, failover
    assert failover["workers_s"] <= RECONNECT_BOUND_S, failover
    # The pool rode it out: its two workers are the two it started with.
    assert books["pool_alive"]
    assert books["worker_pids"] == 2, books
    # Every acknowledged job was answered, once.
    assert books["acknowledged"] >= 60, books
    assert books["lost"] == [], run.topology.logs()
    assert books["duplicates"] == 0
    assert books["results"] >= books["acknowledged"]
    # The Sentinels' password reached them from every process, and no log line.
    assert run.sentinel_password not in run.log.read_text()


def test_a_rebuilt_worker_connection_follows_the_master_as_rqs_pool_builds_it(
    run: FailoverRun,
) -> None:
    """RQ's WorkerPool gives each worker a client rebuilt from the pool's: the same
    connection class with the same keyword arguments, in a plain ConnectionPool. For a
    Sentinel-managed client those arguments hold the pool's proxy to the Sentinels, so the
    rebuilt client still asks them for the master, as the pool's own does."""
    from rq.connections import parse_connection

    connection = runtime.connect(Settings.from_env(run.env))
    client_class, connection_class, kwargs = parse_connection(connection)
    rebuilt = client_class(
        connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs)
    )
    assert rebuilt.set("qrw:test:rebuilt", "1")
    port = rebuilt.connection_pool.get_connection().port
    assert port == run.topology.master_port()


def test_status_and_enqueue_find_the_master_through_the_sentinels(
    run: FailoverRun,
) -> None:
    status = qrw(run, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["redis"] == "ok"
    assert len([w for w in report["workers"] if QUEUE in w["queues"]]) == 2

    enqueued = qrw(run, "enqueue", "--queue", QUEUE, "--wait", "60", "--json", run.ref)
    assert enqueued.returncode == 0, enqueued.stderr
    assert json.loads(enqueued.stdout)["ok"] is True

    # Without the Sentinels' password no master is found, and the message does not show it.
    refused = qrw(run, "status", env={"QRW_REDIS_SENTINEL_PASSWORD": "not-the-password-5e1"})
    assert refused.returncode == 1
    assert "unreachable: No master found for 'mymaster'" in refused.stdout
    for output in (status, enqueued, refused):
        assert run.sentinel_password not in output.stdout + output.stderr
        assert "not-the-password-5e1" not in output.stdout + output.stderr


def test_the_shim_and_the_pools_metrics_find_the_master_through_the_sentinels(
    run: FailoverRun, tmp_path: Path
) -> None:
    """`qrw serve`'s /readyz (QRW_READY_NEEDS_REDIS) and the pool's Redis gauges read the
    master the Sentinels name, after the failover too."""
    port = run.env["QRW_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        scraped = answer.read().decode()
    assert "qrw_redis_up 1.0" in scraped
    assert "\nqrw_workers 2.0" in scraped  # read from Redis at the scrape
    shim = Shim(
        {**run.env, "QRW_READY_NEEDS_REDIS": "true", "QRW_BACKEND": "none"}, tmp_path / "shim.log"
    )
    try:
        shim.wait_ready(timeout=120)
    finally:
        shim.stop()
    for text in (scraped, (tmp_path / "shim.log").read_text()):
        assert run.sentinel_password not in text


def test_a_backfill_runs_through_a_failover_and_writes_one_line_per_object(
    run: FailoverRun, tmp_path: Path
) -> None:
    folder = Path(run.env["QRW_FILE_ROOTS"])
    refs = []
    for n in range(40):
        path = folder / f"bf-{n:03d}.png"
        path.write_bytes(digital_invoice(7200 + n % 4, fmt="png", megapixels=0.5).data)
        refs.append(f"file://{path}")
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("".join(f"{ref}\n" for ref in refs))
    out = tmp_path / "out"
    log = tmp_path / "backfill.log"
    # 8 images a second: the run spans the failover, which comes a dozen images in.
    backfill = subprocess.Popen(
        [
            *(sys.executable, "-m", "worker.cli", "backfill", "start", "through-failover"),
            *("--manifest", str(manifest), "--out", f"file://{out}", "--queue", QUEUE),
            *("--batch", "1", "--rate", "8"),
        ],
        env={**os.environ, **run.env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: enqueued(run) >= 12 or backfill.poll() is not None, 120, "jobs")
        # Two failovers of one master name are twice the failover timeout apart.
        old = run.topology.master_port()
        node = run.topology.kill_master()
        run.topology.wait_failover(old, 60)
        run.topology.restart(node)
        code = backfill.wait(180)
    finally:
        if backfill.poll() is None:
            backfill.kill()
    assert code == 0, log.read_text()[-3000:]
    written = Counter(line["image"] for line in lines(out))
    assert sorted(written) == sorted(refs), log.read_text()[-3000:]
    assert set(written.values()) == {1}


def lines(out: Path) -> list[dict[str, Any]]:
    found = []
    for part in sorted(out.glob("part-*.jsonl.gz")):
        with gzip.open(part, "rt", encoding="utf-8") as handle:
            found += [json.loads(line) for line in handle]
    return found


def enqueued(run: FailoverRun) -> int:
    with_master = run.topology.client()
    try:
        return int(with_master.hget("qrw:backfill:through-failover", "enqueued") or 0)
    except redis.RedisError:
        return 0


def test_the_rust_producer_counts_a_job_queued_only_once_replicas_hold_it(
    run: FailoverRun,
    qr_producer: Path,  # noqa: F811  (tests/test_rust_producer.py builds it, once a session)
) -> None:
    """examples/rust-producer's `--replicas N`: the enqueue followed by `WAIT N` on the same
    connection (docs/protocol.md, *Replication*), straight to the master of now (the example
    speaks to one address; a production producer asks Sentinel, as its README says)."""
    master = f"redis://127.0.0.1:{run.topology.master_port()}/0"
    held = subprocess.run(
        [str(qr_producer), "--redis", master, "--queue", QUEUE, "--replicas", "1", run.ref],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert held.returncode == 0, held.stderr
    # Two replicas asked of a master that has one: never confirmed, so never reported as
    # queued, after the sends again that the protocol allows.
    unheld = subprocess.run(
        [
            *(str(qr_producer), "--redis", master, "--queue", QUEUE),
            *("--replicas", "2", "--wait", "0", run.ref),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert unheld.returncode == 1
    assert "1 of 2 replica(s) confirmed job" in unheld.stderr
