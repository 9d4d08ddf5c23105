"""How a job ends, seen from outside: each outcome published and counted once, whichever
process ends it; failed outcomes in RQ's failed registry, where RQ's own tools count and
requeue them; a requeued job delivers its new result.

Real processes throughout: a `qrw worker` pool, its /metrics scraped over HTTP, workers
killed with SIGKILL, and RQ's own `rq requeue` command.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from models.synth import digital_invoice, no_code_invoice
from tests.conftest import reply_list, wait_result
from tests.services import RedisServer, free_port, wait_until
from worker.procfs import children
from worker.queue import names, producer

RQ = str(Path(sys.executable).with_name("rq"))


@pytest.fixture(scope="module")
def slow_batch(file_root: Path) -> list[str]:
    """Pages with no code: every one runs the whole cascade, so a batch takes seconds."""
    refs = []
    for seed in range(6):
        path = file_root / f"outcome-slow-{seed}.jpg"
        path.write_bytes(no_code_invoice(700 + seed, fmt="jpeg", megapixels=6.0, photo=True).data)
        refs.append(f"file://{path}")
    return refs


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return ""


def jobs_counted(port: int, outcome: str) -> float | None:
    """qrw_jobs_total for one outcome, as the pool's /metrics says it now."""
    found = re.search(rf'^qrw_jobs_total{{outcome="{outcome}"}} ([0-9.e+]+)$', scrape(port), re.M)
    return float(found.group(1)) if found else None


def wait_counted(port: int, outcome: str, value: float, timeout: float = 20) -> None:
    wait_until(
        lambda: jobs_counted(port, outcome) == value,
        timeout,
        f"qrw_jobs_total{{outcome={outcome!r}}} == {value} (now {jobs_counted(port, outcome)})",
    )


def status(redis_server: RedisServer, job_id: str) -> str | None:
    raw = redis_server.client().hget(names.rq_job_key(job_id), "status")
    return raw.decode() if raw else None


def failure_text(redis_server: RedisServer, job_id: str) -> dict[str, object]:
    """What RQ's tools show as the job's failure: its latest Result, a failed one, whose
    text (RQ's `exc_string`) is our JSON."""
    job = Job.fetch(job_id, connection=redis_server.client(), serializer=JSONSerializer)
    latest = job.latest_result()
    assert latest is not None and latest.type.name == "FAILED"
    return json.loads(latest.exc_string)


def in_failed_registry(redis_server: RedisServer, queue: str, job_id: str) -> bool:
    return redis_server.client().zscore(names.rq_failed_key(queue), job_id) is not None


# Issue 17, point 11: worker_lost and deadline_exceeded were published but never counted.


def test_a_job_whose_worker_is_killed_is_counted_worker_lost_by_the_pool(
    own_redis: RedisServer, start_worker, slow_batch: list[str]
) -> None:
    port = free_port()
    queue = "qr-lost"
    # One attempt: the worker's death ends the job, in RQ's maintenance pass of the worker
    # the pool starts in its place (another process than the one that ran the job).
    pool = start_worker(own_redis.url, queue, QRW_METRICS_PORT=str(port), QRW_MAX_ATTEMPTS="1")
    wait_counted(port, "worker_lost", 0.0, timeout=60)
    reply_to = reply_list()
    job_id = producer.enqueue(
        own_redis.client(), {"images": slow_batch, "reply_to": reply_to}, queue=queue
    )
    wait_until(lambda: status(own_redis, job_id) == "started", 60, "the job to start")
    (worker,) = children(pool.process.pid)
    for pid in [*children(worker), worker]:  # the worker and RQ's scheduler it forked
        os.kill(pid, signal.SIGKILL)

    result = wait_result(own_redis, reply_to, timeout=90)
    assert result["error"]["code"] == "worker_lost"
    wait_counted(port, "worker_lost", 1.0)
    assert jobs_counted(port, "ok") == 0.0
    assert in_failed_registry(own_redis, queue, job_id)
    assert failure_text(own_redis, job_id)["code"] == "worker_lost"


def test_a_job_whose_work_horse_is_killed_is_counted_worker_lost_by_its_worker(
    own_redis: RedisServer, start_worker, slow_batch: list[str]
) -> None:
    port = free_port()
    queue = "qr-horse"
    # The forking worker: its parent sees the horse die and ends the job itself.
    pool = start_worker(
        own_redis.url,
        queue,
        QRW_METRICS_PORT=str(port),
        QRW_MAX_ATTEMPTS="1",
        QRW_WORKER_CLASS="fork",
    )
    wait_counted(port, "worker_lost", 0.0, timeout=60)
    reply_to = reply_list()
    job_id = producer.enqueue(
        own_redis.client(), {"images": slow_batch, "reply_to": reply_to}, queue=queue
    )
    wait_until(lambda: status(own_redis, job_id) == "started", 60, "the job to start")
    (worker,) = children(pool.process.pid)
    # RQ puts each work-horse in a process group of its own (RQ's scheduler, the worker's
    # other child, stays in the pool's): that tells them apart.
    (horse,) = wait_until(
        lambda: [pid for pid in children(worker) if _group(pid) == pid], 10, "the work-horse"
    )
    os.kill(horse, signal.SIGKILL)

    result = wait_result(own_redis, reply_to, timeout=60)
    assert result["error"]["code"] == "worker_lost"
    wait_counted(port, "worker_lost", 1.0)
    assert failure_text(own_redis, job_id)["code"] == "worker_lost"


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_job_past_its_timeout_is_counted_deadline_exceeded(
    own_redis: RedisServer, start_worker, slow_batch: list[str]
) -> None:
    port = free_port()
    queue = "qr-timeout"
    start_worker(own_redis.url, queue, QRW_METRICS_PORT=str(port))
    reply_to = reply_list()
    job_id = producer.enqueue(
        own_redis.client(),
        {"images": slow_batch * 4, "reply_to": reply_to},
        queue=queue,
        timeout=1,
    )
    result = wait_result(own_redis, reply_to, timeout=60)
    # Ended by RQ's timeout in the worker, not by the scan: no items, the timeout's message.
    assert result["error"] == {
        "code": "deadline_exceeded",
        "message": "the job ran past its timeout",
    }
    assert "items" not in result
    wait_counted(port, "deadline_exceeded", 1.0)
    assert failure_text(own_redis, job_id) == {
        "code": "deadline_exceeded",
        "message": "the job ran past its timeout",
    }


# Issue 17, point 14: failed results finished the RQ job normally.


def test_failed_results_land_in_rqs_failed_registry_with_their_code_and_are_not_retried(
    own_redis: RedisServer, start_worker, file_root: Path
) -> None:
    port = free_port()
    queue = "qr-failed"
    start_worker(own_redis.url, queue, QRW_METRICS_PORT=str(port))
    client = own_redis.client()
    reply_to = reply_list()
    missing = producer.enqueue(
        client, {"image": f"file://{file_root}/no-such.png", "reply_to": reply_to}, queue=queue
    )
    refused = producer.enqueue(
        client, {"image": "http://example.com/a.png", "reply_to": reply_to}, queue=queue
    )
    foreign = producer.enqueue(
        client, {"image": "file:///x.png", "reply_to": reply_to}, queue=queue, function="os.system"
    )
    results = {wait_result(own_redis, reply_to)["job_id"]: None for _ in range(3)}
    assert set(results) == {missing, refused, foreign}

    expected = {missing: "not_found", refused: "refused_reference", foreign: "refused_job"}
    for job_id, code in expected.items():
        wait_until(lambda j=job_id: in_failed_registry(own_redis, queue, j), 10, "failed registry")
        assert status(own_redis, job_id) == "failed"
        text = failure_text(own_redis, job_id)
        assert text["code"] == code and isinstance(text["message"], str) and text["message"]
        wait_counted(port, code, 1.0)
    assert client.zcard(names.rq_failed_key(queue)) == 3
    time.sleep(1.5)
    assert client.llen(reply_to) == 0  # one result each: nothing was run again
    assert client.llen(names.rq_queue_key(queue)) == 0


def test_the_pool_registers_every_queue_it_serves_before_the_first_job(
    own_redis: RedisServer, start_worker
) -> None:
    client = own_redis.client()
    start_worker(own_redis.url, "qr-live,qr-live-backfill")
    wait_until(lambda: client.scard(names.RQ_WORKERS) == 1, 60, "the worker to register")
    assert {key.decode() for key in client.smembers(names.RQ_QUEUES)} == {
        names.rq_queue_key("qr-live"),
        names.rq_queue_key("qr-live-backfill"),
    }


# Issue 17, point 13: `rq requeue` ran the job again and its new result was dropped.


def test_rq_requeue_of_a_failed_job_delivers_its_new_result_once(
    own_redis: RedisServer, start_worker, file_root: Path
) -> None:
    queue = "qr-requeue"
    start_worker(own_redis.url, queue)
    client = own_redis.client()
    path = file_root / "requeue-arrives-later.png"
    reply_to = reply_list()
    job_id = producer.enqueue(
        client, {"image": f"file://{path}", "reply_to": reply_to}, queue=queue
    )
    assert wait_result(own_redis, reply_to)["error"]["code"] == "not_found"
    wait_until(lambda: in_failed_registry(own_redis, queue, job_id), 10, "the failed registry")

    sample = digital_invoice(170)
    path.write_bytes(sample.data)  # the missing file arrives; ops requeue the job
    out = subprocess.run(
        [RQ, "requeue", "--url", own_redis.url, "--queue", queue,
         "--serializer", "rq.serializers.JSONSerializer", job_id],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Unable" not in out.stdout + out.stderr

    second = wait_result(own_redis, reply_to)
    assert second["ok"] is True and second["codes"][0]["text"] == sample.codes[0].text
    assert json.loads(client.get(names.result_key(job_id)))["ok"] is True
    entries = [e for _, e in client.xrange(names.RESULTS_STREAM) if e[b"job_id"] == job_id.encode()]
    assert [e[b"ok"] for e in entries] == [b"0", b"1"]
    wait_until(lambda: status(own_redis, job_id) == "finished", 10, "RQ to mark it finished")
    assert not in_failed_registry(own_redis, queue, job_id)
    time.sleep(1.5)
    assert client.llen(reply_to) == 0  # exactly once more


def test_rq_requeue_of_a_job_that_timed_out_delivers_its_second_result(
    own_redis: RedisServer, start_worker, slow_batch: list[str]
) -> None:
    """The issue's own case: a job in RQ's failed registry (past its timeout), requeued with
    `rq requeue`, ran again and its result was dropped (`delivered: false`)."""
    queue = "qr-requeue-timeout"
    start_worker(own_redis.url, queue)
    client = own_redis.client()
    reply_to = reply_list()
    job_id = producer.enqueue(
        client, {"images": slow_batch * 4, "reply_to": reply_to}, queue=queue, timeout=1
    )
    first = wait_result(own_redis, reply_to)
    assert first["error"]["code"] == "deadline_exceeded"
    wait_until(lambda: in_failed_registry(own_redis, queue, job_id), 10, "the failed registry")

    out = subprocess.run(
        [RQ, "requeue", "--url", own_redis.url, "--queue", queue, "--serializer", "json", job_id],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and "Unable" not in out.stdout + out.stderr, out

    # Within the client's 10 s socket timeout: the first run took about 2 s.
    second = wait_result(own_redis, reply_to, timeout=9)
    assert second["error"]["code"] == "deadline_exceeded"
    assert second["finished_at"] > first["finished_at"]
    assert json.loads(client.get(names.result_key(job_id)))["finished_at"] == second["finished_at"]
    entries = [e for _, e in client.xrange(names.RESULTS_STREAM) if e[b"job_id"] == job_id.encode()]
    assert len(entries) == 2
    wait_until(lambda: in_failed_registry(own_redis, queue, job_id), 10, "the failed registry")
    time.sleep(1.5)
    assert client.llen(reply_to) == 0
