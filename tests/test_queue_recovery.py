"""Nothing is lost: workers killed mid-job, Redis restarted, S3 away, graceful stops."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from models.synth import digital_invoice, no_code_invoice
from tests.conftest import BUCKET, reply_list, s3_client, wait_result
from tests.services import RedisServer, free_port, wait_until
from worker.procfs import children
from worker.queue import producer


@pytest.fixture(scope="module")
def slow_batch(file_root: Path) -> list[str]:
    """Pages with no code: every one runs the whole cascade, so a batch takes seconds."""
    refs = []
    for seed in range(12):
        path = file_root / f"slow-{seed}.jpg"
        path.write_bytes(no_code_invoice(500 + seed, fmt="jpeg", megapixels=6.0, photo=True).data)
        refs.append(f"file://{path}")
    return refs


@pytest.fixture
def own_redis(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def worker_log(folder: Path) -> str:
    """The tail of the workers' own logs, so a failure here says what the worker saw."""
    return "\n".join(path.read_text()[-4000:] for path in sorted(folder.glob("worker-*.log")))


def status(redis_server: RedisServer, job_id: str) -> str | None:
    raw = redis_server.client().hget(f"rq:job:{job_id}", "status")
    return raw.decode() if raw else None


def test_a_job_whose_worker_is_killed_runs_again_and_finishes(
    own_redis: RedisServer, start_worker, slow_batch: list[str]
) -> None:
    worker = start_worker(own_redis.url, "qr")
    reply_to = reply_list()
    job_id = producer.enqueue(own_redis.client(), {"images": slow_batch, "reply_to": reply_to})
    wait_until(lambda: status(own_redis, job_id) == "started", 60, "the job to start")
    time.sleep(0.3)
    killed_at = time.monotonic()
    worker.kill_all()  # the pool, its worker and the work-horse, all at once
    assert own_redis.client().get(f"qrw:result:{job_id}") is None

    start_worker(own_redis.url, "qr")
    result = wait_result(own_redis, reply_to, timeout=120)
    assert result["ok"] is True
    assert len(result["items"]) == len(slow_batch)
    assert time.monotonic() - killed_at < 120
    # Delivered exactly once, even though it ran twice.
    assert own_redis.client().llen(reply_to) == 0
    assert own_redis.client().xlen("qrw:results") == 1


def grandchildren(pid: int) -> set[int]:
    return {h for w in children(pid) for h in children(w)}


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_killed_work_horse_is_retried_by_its_own_worker(
    own_redis: RedisServer, start_worker, slow_batch: list[str]
) -> None:
    pool = start_worker(own_redis.url, "qr", QRW_WORKER_CLASS="fork")
    # Regression: a worker's first child is RQ's scheduler, forked as it starts working; the
    # test killed that instead of the work-horse, and passed without testing a horse's death.
    # Then it took the children that appeared once the job ran, and on a loaded machine the
    # scheduler (or the PDF renderer child) appeared late and was counted as a horse. RQ
    # puts each work-horse in a process group of its own: that alone tells them apart.
    reply_to = reply_list()
    job_id = producer.enqueue(own_redis.client(), {"images": slow_batch, "reply_to": reply_to})
    wait_until(lambda: status(own_redis, job_id) == "started", 60, "the job to start")
    # pool -> worker -> work-horse: kill only the horse, as the OOM killer would.
    horses = wait_until(
        lambda: sorted(pid for pid in grandchildren(pool.process.pid) if _group(pid) == pid),
        10,
        "the work-horse",
    )
    assert len(horses) == 1
    os.kill(horses[0], signal.SIGKILL)
    result = wait_result(own_redis, reply_to, timeout=120)
    assert result["ok"] is True
    assert len(result["items"]) == len(slow_batch)


def test_a_job_over_its_timeout_is_stopped_and_reported(
    redis_server: RedisServer, shared_queue: str, slow_batch: list[str]
) -> None:
    reply_to = reply_list()
    started = time.monotonic()
    # Regression: the cascade got faster on pages with no code, and one slow batch came
    # within its 1 s limit on a fast machine: four times over, it is seconds of work.
    producer.enqueue(
        redis_server.client(),
        {"images": slow_batch * 4, "reply_to": reply_to},
        queue=shared_queue,
        timeout=1,
    )
    result = wait_result(redis_server, reply_to, timeout=60)
    assert result["ok"] is False
    assert result["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 10


def test_redis_restarting_with_jobs_queued_loses_none(
    own_redis: RedisServer, start_worker, file_root: Path, tmp_path: Path
) -> None:
    sample = digital_invoice(600)
    (file_root / "restart.png").write_bytes(sample.data)
    start_worker(own_redis.url, "qr")
    client = own_redis.client()
    job_ids = [
        producer.enqueue(client, {"image": f"file://{file_root}/restart.png"}) for _ in range(30)
    ]
    time.sleep(0.2)  # some done, some running, most still queued
    own_redis.stop()
    time.sleep(2)
    own_redis.start()

    def all_done() -> bool:
        return all(own_redis.client().exists(f"qrw:result:{job_id}") for job_id in job_ids)

    wait_until(all_done, 120, "every job's result after the restart")
    results = [json.loads(own_redis.client().get(f"qrw:result:{job_id}")) for job_id in job_ids]
    failed = [result["error"] for result in results if not result["ok"]]
    assert not failed, (failed, worker_log(tmp_path))


def test_sigterm_lets_the_current_job_finish_then_exits(
    own_redis: RedisServer, start_worker, slow_batch: list[str]
) -> None:
    worker = start_worker(own_redis.url, "qr")
    reply_to = reply_list()
    job_id = producer.enqueue(own_redis.client(), {"images": slow_batch[:6], "reply_to": reply_to})
    wait_until(lambda: status(own_redis, job_id) == "started", 60, "the job to start")
    worker.signal(signal.SIGTERM)
    result = wait_result(own_redis, reply_to, timeout=60)
    assert result["ok"] is True
    assert worker.process.wait(30) == 0
    assert status(own_redis, job_id) == "finished"


def test_storage_that_stays_down_ends_in_storage_unavailable(
    redis_server: RedisServer, start_worker, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    start_worker(redis_server.url, "qr-s3-down", AWS_ENDPOINT_URL=dead, QRW_FETCH_ATTEMPTS="3")
    reply_to = reply_list()
    producer.enqueue(
        redis_server.client(),
        {"image": f"s3://{BUCKET}/in/x.png", "reply_to": reply_to},
        queue="qr-s3-down",
    )
    result = wait_result(redis_server, reply_to, timeout=60)
    assert result["error"]["code"] == "storage_unavailable"
    assert "3 times" in result["error"]["message"]


def test_storage_coming_back_during_the_retries_is_a_success(
    redis_server: RedisServer, start_worker, s3_endpoint: str
) -> None:
    from moto.server import ThreadedMotoServer

    sample = digital_invoice(601)
    s3_client(s3_endpoint).put_object(Bucket=BUCKET, Key="in/late.png", Body=sample.data)
    port = free_port()
    start_worker(
        redis_server.url,
        "qr-s3-late",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        QRW_FETCH_ATTEMPTS="8",
    )
    reply_to = reply_list()
    producer.enqueue(
        redis_server.client(),
        {"image": f"s3://{BUCKET}/in/late.png", "reply_to": reply_to},
        queue="qr-s3-late",
    )
    time.sleep(3)
    late = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    late.start()  # moto's backend is per process: the bucket is already there
    try:
        result = wait_result(redis_server, reply_to, timeout=60)
    finally:
        late.stop()
    assert result["ok"] is True
    assert result["codes"][0]["text"] == sample.codes[0].text
