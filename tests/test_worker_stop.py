"""How fast an idle pool stops on SIGTERM (issue 17, point 16; issue 18, point 4).

Each RQ worker listens for RQ's commands (stop a job, shut down) on a pub/sub thread that
waited up to 60 s for its next message. On shutdown RQ sends UNSUBSCRIBE, then stops that
thread and joins it. When the thread read the UNSUBSCRIBE reply before the stop flag was set,
which a busy machine makes likely, it went back to waiting for a subscription for the whole
60 s, and the worker, and the pool, with it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.conftest import worker_env
from tests.services import RedisServer, WorkerProcess, wait_until
from worker.queue import names
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
