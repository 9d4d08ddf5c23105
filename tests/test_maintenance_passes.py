"""RQ's maintenance pass (cleaning the registries, finding stranded jobs) runs once per queue
and QRW_RECOVERY_INTERVAL, however many workers serve the queue.

Every worker is due for a pass each interval, counted from its own last one. RQ's lock on the
queue only kept two passes from overlapping: each worker released it at the end of its pass,
so workers out of step with each other (started at different times, as a fleet's are) each
made their own, N passes an interval for N workers, each a scan of the job hashes
(docs/operations.md, *How far one Redis goes*).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import worker_env
from tests.services import RedisServer, WorkerProcess, wait_until
from worker.queue import names

INTERVAL_S = 2
WATCH_S = 12.0


def passes(logs: list[Path], queue: str) -> int:
    return sum(log.read_text().count(f"cleaning registries for queue: {queue}") for log in logs)


def test_workers_out_of_step_make_one_pass_an_interval_between_them(
    redis_server: RedisServer, s3_endpoint: str, file_root: Path, tmp_path: Path
) -> None:
    queue = "qr-maintenance-passes"
    client = redis_server.client()
    logs = [tmp_path / f"pool-{i}.log" for i in range(3)]
    pools: list[WorkerProcess] = []
    try:
        # Three pools of one worker, each started a third of an interval after the last
        # was ready: their workers fall due at different times.
        for number, log in enumerate(logs, start=1):
            # worker_env gives each pool a metrics port of its own.
            env = worker_env(
                redis_server.url,
                s3_endpoint,
                file_root,
                QRW_RECOVERY_INTERVAL=str(INTERVAL_S),
                QRW_LOG_LEVEL="info",
            )
            pools.append(WorkerProcess(env, queue, 1, log=log))
            wait_until(
                lambda n=number: client.scard(names.rq_queue_workers_key(queue)) == n,
                90,
                f"worker {number}",
            )
            time.sleep(INTERVAL_S / 3)
        time.sleep(INTERVAL_S)
        before = passes(logs, queue)
        time.sleep(WATCH_S)
        made = passes(logs, queue) - before
    finally:
        for pool in pools:
            pool.stop()
    # One pass an interval, and one more for a watch that starts and ends mid-interval;
    # three workers each making their own would make about three times as many.
    assert 1 <= made <= WATCH_S / INTERVAL_S + 1, f"{made} passes in {WATCH_S:.0f} s"
