"""How fast a pool stops on SIGTERM (issue 17, point 16; issue 18, point 4): idle, at once;
busy, once its current job is done.

The issue asks for 20 stops of each; a pool start costs about 3 s here, so the suite stops
3 idle and 3 busy pools, and `python -m worker.bench.soak --stops 20` stops 20 of each kind
and writes its numbers into docs/reliability.md.

Each RQ worker listens for RQ's commands (stop a job, shut down) on a pub/sub thread that
waited up to 60 s for its next message. On shutdown RQ sends UNSUBSCRIBE, then stops that
thread and joins it. When the thread read the UNSUBSCRIBE reply before the stop flag was set,
which a busy machine makes likely, it went back to waiting for a subscription for the whole
60 s, and the worker, and the pool, with it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from models.synth import no_code_invoice
from tests.conftest import reply_list, worker_env
from tests.services import RedisServer, WorkerProcess, wait_until
from worker.queue import names, producer
from worker.queue.intake import QrQueue
from worker.queue.rq_worker import worker_class

# An idle pool stops in about a second (its own loop polls once a second); this allows for
# a CPU shared with other test runs.
STOP_BOUND_S = 5.0


def test_the_command_listener_stops_at_once_when_it_read_rqs_unsubscribe_reply_first(
    redis_server: RedisServer,
) -> None:
    connection = redis_server.client()
    worker = worker_class("simple")(
        [QrQueue("qr-listener", connection=connection)], connection=connection
    )
    worker.subscribe()
    assert worker.pubsub is not None
    # The interleaving of a loaded machine at shutdown: RQ's UNSUBSCRIBE goes out and the
    # listener thread reads its reply before teardown has asked the thread to stop ...
    worker.pubsub.unsubscribe()
    wait_until(lambda: not worker.pubsub.subscribed, 10, "the listener to read the reply")
    time.sleep(0.2)  # ... and is back waiting for a subscription.
    started = time.monotonic()
    worker.unsubscribe()  # what RQ's teardown does next
    took = time.monotonic() - started
    assert took < 2.5, f"the listener thread took {took:.1f} s to stop"


@pytest.mark.parametrize("attempt", range(3))
def test_an_idle_two_worker_pool_exits_within_seconds_of_sigterm(
    redis_server: RedisServer, s3_endpoint: str, file_root: Path, tmp_path: Path, attempt: int
) -> None:
    queue = f"qr-idle-stop-{attempt}"
    pool = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root), queue, 2, log=tmp_path / "pool.log"
    )
    client = redis_server.client()
    try:
        wait_until(
            lambda: client.scard(names.rq_queue_workers_key(queue)) == 2, 90, "two workers ready"
        )
        time.sleep(1.0)  # idle: both workers wait for a job
        started = time.monotonic()
        pool.signal(signal.SIGTERM)
        pool.process.wait(30)
        took = time.monotonic() - started
    finally:
        pool.stop()
    assert pool.process.returncode == 0
    assert took < STOP_BOUND_S, f"the pool took {took:.1f} s to stop"
    assert client.scard(names.rq_queue_workers_key(queue)) == 0


def test_a_pool_stopped_cleanly_adopts_no_process_its_workers_left_behind(
    redis_server: RedisServer, s3_endpoint: str, file_root: Path, tmp_path: Path
) -> None:
    # Each worker starts a PDF renderer child at warm-up. A pool worker ends with os._exit
    # (multiprocessing), which skips atexit, where the renderer used to be stopped: every
    # clean stop left the renderers to the pool, which logged each as an orphan it adopted.
    queue = "qr-orphan-stop"
    log = tmp_path / "pool.log"
    pool = WorkerProcess(worker_env(redis_server.url, s3_endpoint, file_root), queue, 2, log=log)
    client = redis_server.client()
    try:
        wait_until(
            lambda: client.scard(names.rq_queue_workers_key(queue)) == 2, 90, "two workers ready"
        )
        pool.signal(signal.SIGTERM)
        pool.process.wait(30)
    finally:
        pool.stop()
    assert pool.process.returncode == 0
    adopted = [line for line in log.read_text().splitlines() if "pool_adopted_orphan" in line]
    assert adopted == []


@pytest.fixture(scope="module")
def slow_images(file_root: Path) -> list[str]:
    """Pages with no code: each runs the whole cascade, so a job of two takes seconds."""
    refs = []
    for seed in range(2):
        path = file_root / f"stop-slow-{seed}.jpg"
        path.write_bytes(no_code_invoice(700 + seed, fmt="jpeg", megapixels=6.0, photo=True).data)
        refs.append(f"file://{path}")
    return refs


@pytest.mark.parametrize("attempt", range(3))
def test_a_busy_pool_finishes_its_job_then_exits_within_seconds_of_it(
    redis_server: RedisServer,
    s3_endpoint: str,
    file_root: Path,
    tmp_path: Path,
    slow_images: list[str],
    attempt: int,
) -> None:
    queue = f"qr-busy-stop-{attempt}"
    pool = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root), queue, 2, log=tmp_path / "pool.log"
    )
    client = redis_server.client()
    reply_to = reply_list()
    try:
        wait_until(
            lambda: client.scard(names.rq_queue_workers_key(queue)) == 2, 90, "two workers ready"
        )
        payload = {"images": slow_images, "reply_to": reply_to}
        job_id = producer.enqueue(client, payload, queue=queue)
        wait_until(
            lambda: client.hget(f"rq:job:{job_id}", "status") == b"started", 60, "the job to start"
        )
        pool.signal(signal.SIGTERM)
        finished = exited = None
        deadline = time.monotonic() + 120
        while exited is None and time.monotonic() < deadline:
            if finished is None and client.exists(reply_to):
                finished = time.monotonic()
            if pool.process.poll() is not None:
                exited = time.monotonic()
            time.sleep(0.02)
    finally:
        pool.stop()
    assert finished is not None, "the stop did not wait for the running job's result"
    assert exited is not None, "the pool was still running 120 s after SIGTERM"
    result = json.loads(client.lpop(reply_to))
    assert result["ok"] is True and len(result["items"]) == len(slow_images)
    assert pool.process.returncode == 0
    # The result is published as the job ends: what follows is the stop itself.
    assert exited - finished < STOP_BOUND_S, f"exited {exited - finished:.1f} s after the job"
    assert client.scard(names.rq_queue_workers_key(queue)) == 0


def test_a_pool_stopped_while_its_workers_load_their_engines_exits_within_seconds(
    redis_server: RedisServer, s3_endpoint: str, file_root: Path, tmp_path: Path
) -> None:
    # A worker forks RQ's scheduler, then loads its engine, then installs RQ's signal
    # handlers. The pool's stop (SIGINT) in between was a KeyboardInterrupt that skipped RQ's
    # teardown: the scheduler was never stopped, and the worker waited for it at exit for
    # ever (a KEDA scale-down right after a scale-up meets exactly this).
    pool = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root),
        "qr-stop-loading",
        2,
        log=tmp_path / "pool.log",
    )
    try:
        wait_until(lambda: grandchildren(pool), 90, "a worker to fork its scheduler")
        started = time.monotonic()
        pool.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            pool.process.wait(STOP_BOUND_S * 3)
        took = time.monotonic() - started
        assert pool.process.poll() is not None, "the pool was still running"
    finally:
        pool.stop()
    assert took < STOP_BOUND_S, f"the pool took {took:.1f} s to stop"
    assert pool.process.returncode == 0
    assert not pool.descendants()


def grandchildren(pool: WorkerProcess) -> list[int]:
    workers = set(pool.descendants())
    return [
        pid for pid in workers if Path(f"/proc/{pid}/stat").exists() and parent_of(pid) in workers
    ]


def parent_of(pid: int) -> int:
    try:
        # The fourth field; the second (the command) may hold spaces but ends with ')'.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def test_a_stop_that_lands_while_a_worker_admits_a_job_stops_it_and_answers_every_job_it_took(
    redis_server: RedisServer, s3_endpoint: str, file_root: Path, tmp_path: Path
) -> None:
    # Issue 18's soak: one deploy's pool did not stop in 120 s (it was killed) and one job
    # never got a result. RQ's stop request raised StopRequested wherever the idle worker's
    # main thread was; inside the admission of a job just popped, a guard meant for bugs in
    # our checks caught it: the job was dead-lettered as an admission failure (no result
    # under its id) and the stop was forgotten, so the worker ran on and the pool waited for
    # it for good. A stream of jobs refused at admission keeps the worker admitting almost
    # all the time, so the pool's stop lands there.
    queue = "qr-stop-admitting"
    pool = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root), queue, 1, log=tmp_path / "pool.log"
    )
    client = redis_server.client()
    try:
        wait_until(
            lambda: client.scard(names.rq_queue_workers_key(queue)) == 1, 90, "the worker ready"
        )
        job_ids = [
            producer.enqueue(
                client, {"images": ["file:///x.png"]}, queue=queue, function="os.system"
            )
            for _ in range(4000)
        ]
        wait_until(lambda: client.llen(names.rq_queue_key(queue)) < 3500, 60, "admissions")
        started = time.monotonic()
        pool.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            pool.process.wait(STOP_BOUND_S * 3)
        took = time.monotonic() - started
        stopped = pool.process.poll() is not None
    finally:
        pool.stop()
    assert stopped, f"the pool was still running {took:.1f} s after SIGTERM"
    assert took < STOP_BOUND_S, f"the pool took {took:.1f} s to stop"
    waiting = {raw.decode() for raw in client.lrange(names.rq_queue_key(queue), 0, -1)}
    taken = [job_id for job_id in job_ids if job_id not in waiting]
    unanswered = [job_id for job_id in taken if not client.exists(names.result_key(job_id))]
    assert taken and not unanswered, f"{len(unanswered)} of {len(taken)} taken jobs unanswered"
    for job_id in taken:
        assert json.loads(client.get(names.result_key(job_id)))["error"]["code"] == "refused_job"
