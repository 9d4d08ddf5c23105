"""A Redis that runs out of memory mid-run (`maxmemory` under `noeviction`) costs no job.

Issue 18, point 2: workers died on RQ's own `OutOfMemoryError` and were respawned 39 times
a minute; once memory was raised, jobs popped by a worker that died were in no queue, list
or registry, and nothing ever ran them. Here a real pool works through a batch while a
filler key takes Redis to its limit, memory is raised again, and every job is counted to
exactly one result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from models.synth.samples import digital_invoice
from tests.conftest import reply_list
from tests.services import RedisServer, wait_until
from worker.queue import producer

JOBS = 30
FILLER = "test:filler"


@pytest.fixture
def own_redis(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path / "redis", extra_args=("--maxmemory-policy", "noeviction"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pages(file_root: Path) -> list[str]:
    refs = []
    for seed in range(4):
        path = file_root / f"full-{seed}.png"
        path.write_bytes(digital_invoice(900 + seed, fmt="png").data)
        refs.append(f"file://{path}")
    return refs


def fill(client: redis.Redis) -> int:
    """Take Redis to its maxmemory: a limit just above what it holds, then a filler key
    grown until a write is refused. Returns the bytes the filler holds."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 2 * 1024 * 1024)
    chunk = b"x" * 64 * 1024
    written = 0
    try:
        while True:
            client.append(FILLER, chunk)
            written += len(chunk)
    except redis.exceptions.OutOfMemoryError:
        return written


def engine_starts(log: Path) -> int:
    return sum('"engine_ready"' in line for line in log.read_text().splitlines())


@pytest.mark.parametrize("queues", ["qr-full", "qr-full,qr-full-other"])
def test_every_job_survives_a_full_redis_with_one_result_and_no_crash_loop(
    own_redis: RedisServer, start_worker, pages: list[str], tmp_path: Path, queues: str
) -> None:
    # Both ways a worker pops: one queue moves the id to RQ's intermediate list (LMOVE);
    # several pop it off with BLPOP, and until it is registered only the worker knows it.
    client = own_redis.client()
    queue = queues.split(",")[0]
    pool = start_worker(own_redis.url, queues, workers=2, QRW_LOG_LEVEL="info")
    assert pool.log is not None
    wait_until(lambda: engine_starts(pool.log) >= 2, 60, "two warmed workers")
    reply_to = reply_list()
    ids = [
        producer.enqueue(
            client, {"image": pages[n % len(pages)], "reply_to": reply_to}, queue=queue
        )
        for n in range(JOBS)
    ]
    wait_until(lambda: client.llen(reply_to) >= 3, 30, "the first results")
    fill(client)
    full_since = time.monotonic()
    # Redis full for a while, with the pool working: every write of every worker refused.
    time.sleep(6)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("test:probe", "x")
    client.config_set("maxmemory", 0)
    client.delete(FILLER)

    results = []
    deadline = time.monotonic() + 45
    while len(results) < JOBS and time.monotonic() < deadline:
        popped = client.blpop([reply_to], timeout=1)
        if popped:
            results.append(json.loads(popped[1]))
    recovered_in = time.monotonic() - full_since
    log = pool.log.read_text()
    by_id = sorted(result["job_id"] for result in results)
    stranded = sorted(set(ids) - set(by_id))
    assert stranded == [], (
        f"{len(stranded)} of {JOBS} jobs got no result; their hashes: "
        + repr([client.hgetall(f"rq:job:{job_id}") for job_id in stranded[:3]])
        + "\n"
        + log[-6000:]
    )
    assert by_id == sorted(ids), "a job answered twice"
    time.sleep(1)
    assert client.llen(reply_to) == 0, "a job answered twice"
    assert all(result["ok"] for result in results), [r for r in results if not r["ok"]][:2]
    # No crash loop: the two workers rode the outage out, none died and was respawned.
    assert engine_starts(pool.log) == 2, log[-6000:]
    assert recovered_in < 50


def test_jobs_popped_by_a_worker_that_died_are_found_and_run_whatever_lock_it_left(
    own_redis: RedisServer, start_worker, pages: list[str]
) -> None:
    # What the dead workers of the incident left: one job popped off its queue (BLPOP, a
    # worker serving two queues) and never registered, so its hash says queued; one whose
    # hash says started, by a worker that is gone, in no registry; and RQ's maintenance
    # lock, taken by a worker that died mid-pass, with RQ's 899 s to live.
    client = own_redis.client()
    queue = "qr-stranded"
    reply_to = reply_list()
    popped = producer.enqueue(client, {"image": pages[0], "reply_to": reply_to}, queue=queue)
    started = producer.enqueue(client, {"image": pages[1], "reply_to": reply_to}, queue=queue)
    assert client.lpop(f"rq:queue:{queue}") == popped.encode()
    assert client.lpop(f"rq:queue:{queue}") == started.encode()
    client.hset(f"rq:job:{started}", mapping={"status": "started", "worker_name": "gone"})
    client.set(f"rq:clean_registries:{queue}", 1, ex=899)

    begun = time.monotonic()
    start_worker(own_redis.url, f"{queue},{queue}-other", workers=1)
    results = {}
    while len(results) < 2 and time.monotonic() - begun < 55:
        item = client.blpop([reply_to], timeout=1)
        if item:
            result = json.loads(item[1])
            results[result["job_id"]] = result
    took = time.monotonic() - begun
    assert sorted(results) == sorted([popped, started]), f"answered: {sorted(results)}"
    assert all(result["ok"] for result in results.values())
    # A worker's start, the lock cut to 15 s (three 5 s intervals), then a grace of 15 s
    # before a job that looks stranded is queued again (a live worker may hold it).
    assert took < 50, took
    time.sleep(1)
    assert client.llen(reply_to) == 0, "a job answered twice"


def test_a_producer_is_told_at_exec_that_a_full_redis_queued_nothing(
    own_redis: RedisServer,
) -> None:
    # docs/protocol.md, Enqueue: each command of the transaction is answered OOM, EXEC
    # EXECABORT, and nothing of the job is written; the producer retries with backoff.
    client = own_redis.client()
    fill(client)
    with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
        producer.enqueue(client, {"image": "file:///nowhere.png"}, queue="qr-full", job_id="j1")
    assert not client.exists("rq:job:j1")
    assert client.llen("rq:queue:qr-full") == 0
    client.config_set("maxmemory", 0)
    assert producer.enqueue(client, {"image": "file:///nowhere.png"}, queue="qr-full")


def test_a_worker_that_keeps_dying_is_respawned_with_backoff(
    own_redis: RedisServer, start_worker, tmp_path: Path
) -> None:
    # A worker that dies as it starts (here: detector weights that are there, as the pool
    # checks, but no ONNX model) was started again once a second by RQ's pool, each time
    # loading its engine: 39 restarts a minute in the incident. Now the waits double from
    # the second death.
    broken = tmp_path / "broken-models"
    broken.mkdir()
    for name in ("qr-det-small.onnx", "qr-det-medium.onnx"):
        (broken / name).write_bytes(b"not a model")
    pool = start_worker(
        own_redis.url, "qr-dying", workers=1, QRW_MODEL_DIR=str(broken), QRW_LOG_LEVEL="info"
    )
    assert pool.log is not None
    time.sleep(20)
    deaths = pool.log.read_text().count("is dead")
    # Waits of about 1, 2, 4, 8 and 16 s (each 0.5x to 1.5x) from the second death on: 7 at
    # the most in 20 s; RQ's pool alone starts one every second (about 20).
    assert 3 <= deaths <= 7, f"{deaths} deaths in 20 s\n" + pool.log.read_text()[-3000:]
