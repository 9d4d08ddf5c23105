"""A worker pool as it runs beside a backfill: by default it serves `qr` first and
`qr-backfill` behind it, and its /metrics shows each backfill run's state and counts, read
from the run's state hash in Redis.

One pool with the default QRW_QUEUES (no --queues, no QRW_QUEUES in its environment), on a
Redis of its own so that the queues are literally `qr` and `qr-backfill` and no other
test's workers take their jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from models.synth import digital_invoice
from tests.conftest import reply_list, wait_results, worker_env
from tests.services import RedisServer, WorkerProcess, free_port, wait_until
from worker.queue import names
from worker.queue.producer import rq_timestamp

LIVE, BACKFILL = "qr", "qr-backfill"


class DefaultQueuesWorker(WorkerProcess):
    """`qrw worker` with neither --queues nor QRW_QUEUES: the queues are the default's."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        environ = {**os.environ, **env}
        environ.pop("QRW_QUEUES", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--workers", "1"],
            env=environ,
            stdout=open(log, "wb"),  # noqa: SIM115 - the child holds it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class Pool:
    redis: RedisServer
    client: redis.Redis
    metrics_port: int
    images: list[str]


@pytest.fixture(scope="module")
def pool(
    s3_endpoint: str, file_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pool]:
    folder = tmp_path_factory.mktemp("backfill-serving")
    server = RedisServer(folder / "redis")
    port = free_port()
    env = worker_env(server.url, s3_endpoint, file_root, QRW_METRICS_PORT=str(port))
    worker = DefaultQueuesWorker(env, folder / "worker.log")
    client = server.client()
    for queue in (LIVE, BACKFILL):
        wait_until(
            lambda queue=queue: client.scard(names.rq_queue_workers_key(queue)) == 1,
            90,
            f"the worker to serve {queue}",
        )
    images = []
    for seed in range(3):
        path = file_root / f"serving-{seed}.png"
        path.write_bytes(digital_invoice(80 + seed).data)
        images.append(f"file://{path}")
    yield Pool(server, client, port, images)
    worker.stop()
    server.stop()


def job_fields(queue: str, payload: dict[str, Any]) -> dict[str, str]:
    stamp = rq_timestamp()
    return {
        "data": json.dumps(["jobs.scan", None, [payload], {}]),
        "origin": queue,
        "status": "queued",
        "created_at": stamp,
        "enqueued_at": stamp,
        "timeout": "300",
    }


def test_a_worker_on_the_default_queues_takes_a_live_job_before_queued_backfill_jobs(
    pool: Pool,
) -> None:
    reply_to = reply_list()
    backfill = [f"bf-{uuid.uuid4().hex}" for _ in range(6)]
    # Each backfill job a batch that keeps the one worker busy for a while.
    batch = {"images": pool.images * 4, "reply_to": reply_to, "stream": False}
    with pool.client.pipeline(transaction=True) as pipe:
        for job_id in backfill:
            pipe.hset(names.rq_job_key(job_id), mapping=job_fields(BACKFILL, batch))
            pipe.rpush(names.rq_queue_key(BACKFILL), job_id)
        pipe.execute()
    wait_until(
        lambda: pool.client.llen(names.rq_queue_key(BACKFILL)) < len(backfill),
        60,
        "the worker to take the first backfill job",
    )
    live = f"live-{uuid.uuid4().hex}"
    with pool.client.pipeline(transaction=True) as pipe:
        pipe.hset(
            names.rq_job_key(live),
            mapping=job_fields(LIVE, {"image": pool.images[0], "reply_to": reply_to}),
        )
        pipe.rpush(names.rq_queue_key(LIVE), live)
        pipe.lrange(names.rq_queue_key(BACKFILL), 0, -1)  # what was still waiting, atomically
        waiting = {raw.decode() for raw in pipe.execute()[-1]}
    assert len(waiting) >= 4, "the first backfill job ended before the live job was pushed"

    order = [result["job_id"] for result in wait_results(pool.redis, reply_to, 7, timeout=240)]
    assert all(result_id in [*backfill, live] for result_id in order)
    before_live = order[: order.index(live)]
    # Only the backfill job the worker had already taken went ahead; none that was waiting.
    assert not waiting & set(before_live), order
    assert len(before_live) == len(backfill) - len(waiting)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the pool's /metrics: (name, sorted labels) -> value."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def run_samples(samples: dict, run: str) -> dict[str, float]:
    """The qrw_backfill_* samples of one run: name (with its state, for the state gauge)."""
    found = {}
    for (name, labels), value in samples.items():
        labelled = dict(labels)
        if name.startswith("qrw_backfill_") and labelled.get("run") == run:
            found[name + (f"[{labelled['state']}]" if "state" in labelled else "")] = value
    return found


def test_the_pools_metrics_show_each_backfill_runs_state_and_counts(pool: Pool) -> None:
    run, gone, garbled = (f"metrics-{uuid.uuid4().hex[:8]}-{n}" for n in range(3))
    client = pool.client
    client.sadd(names.BACKFILLS, run, gone, garbled)
    client.hset(
        names.backfill_key(run),
        mapping={
            "state": "paused",
            "listed": 1000,
            "enqueued": 400,
            "done": 380,
            "failed": 3,
            "objects_ok": 377,
            "objects_failed": 3,
            "skipped": 12,
            "jobs": 40,
            "parts": 7,
            "cancelled": 0,
            "bad_lines": 2,
            "position": '{"source": 0, "after": "in/0400.png", "taken": 400}',
        },
    )
    client.hset(names.backfill_inflight_key(run), mapping={"bf-a": "[]", "bf-b": "[]"})
    client.hset(names.backfill_key(garbled), mapping={"state": "running", "listed": "many"})

    samples = wait_until(lambda: run_samples(scrape(pool.metrics_port), run), 60, "the gauges")
    assert samples == {
        "qrw_backfill_state[running]": 0.0,
        "qrw_backfill_state[paused]": 1.0,
        "qrw_backfill_state[done]": 0.0,
        "qrw_backfill_state[cancelled]": 0.0,
        "qrw_backfill_state[failed]": 0.0,
        "qrw_backfill_listed": 1000.0,
        "qrw_backfill_enqueued": 400.0,
        "qrw_backfill_done": 380.0,
        "qrw_backfill_failed": 3.0,
        "qrw_backfill_objects_ok": 377.0,
        "qrw_backfill_objects_failed": 3.0,
        "qrw_backfill_skipped": 12.0,
        "qrw_backfill_jobs": 40.0,
        "qrw_backfill_parts": 7.0,
        "qrw_backfill_cancelled": 0.0,
        "qrw_backfill_bad_lines": 2.0,
        "qrw_backfill_in_flight": 2.0,
    }
    everything = scrape(pool.metrics_port)
    # A run whose state hash is gone shows nothing; a count that is not a number is left
    # out, the rest of its run still shows.
    assert run_samples(everything, gone) == {}
    assert run_samples(everything, garbled)["qrw_backfill_state[running]"] == 1.0
    assert "qrw_backfill_listed" not in run_samples(everything, garbled)
    assert run_samples(everything, garbled)["qrw_backfill_in_flight"] == 0.0

    # Read per scrape: the run moving on shows at once.
    client.hset(names.backfill_key(run), mapping={"state": "done", "done": 1000})
    client.delete(names.backfill_inflight_key(run))
    now = run_samples(scrape(pool.metrics_port), run)
    assert now["qrw_backfill_state[done]"] == 1.0
    assert now["qrw_backfill_state[paused]"] == 0.0
    assert now["qrw_backfill_done"] == 1000.0
    assert now["qrw_backfill_in_flight"] == 0.0


def test_the_metrics_follow_the_run_states_and_counters_of_the_state_hash() -> None:
    # The collector does not import worker.backfill (the pool's /metrics must not fail with
    # it), so the names it reads are pinned to the state module's here.
    from worker.backfill import state
    from worker.metrics import BACKFILL_COUNTS, BACKFILL_STATES

    assert tuple(member.value for member in state.RunState) == BACKFILL_STATES
    assert tuple(BACKFILL_COUNTS) == state.COUNTERS
