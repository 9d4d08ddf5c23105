"""The pool owns every process it starts, grandchildren included (issue 18, point 5).

A worker forks RQ's scheduler, and its first PDF starts a renderer child
(worker.engine.isolation). When that worker is SIGKILLed, both are orphans: without a
subreaper the kernel hands them to init, outside the pool (out of its PSS, out of reach of
its SIGTERM), and the scheduler ran on until something else killed it, holding the queue's
scheduler lock.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from models.synth import digital_invoice
from tests.conftest import reply_list, wait_result, worker_env
from tests.services import RedisServer, WorkerProcess, wait_until
from worker.procfs import children
from worker.queue import names, producer

# The supervisor looks at its children once a second, asks an orphan to stop with SIGTERM
# and ends it with SIGKILL a few seconds later; this allows for a CPU shared with other tests.
ORPHAN_GONE_S = 15.0


def state(pid: int) -> str | None:
    """The process's state letter ('Z' for a zombie), None once it is gone for good."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def test_a_sigkilled_workers_scheduler_and_pdf_renderer_end_with_it_inside_the_pool(
    redis_server: RedisServer, s3_endpoint: str, file_root: Path, tmp_path: Path
) -> None:
    queue = "qr-orphans"
    pool = WorkerProcess(
        worker_env(redis_server.url, s3_endpoint, file_root), queue, 1, log=tmp_path / "pool.log"
    )
    client = redis_server.client()
    grandchildren: list[int] = []
    try:
        wait_until(lambda: client.scard(names.rq_queue_workers_key(queue)) == 1, 90, "the worker")
        # A PDF makes the worker start its renderer child, which it keeps for the next one.
        pdf = file_root / "orphans.pdf"
        pdf.write_bytes(digital_invoice(31, fmt="pdf").data)
        reply_to = reply_list()
        producer.enqueue(client, {"image": f"file://{pdf}", "reply_to": reply_to}, queue=queue)
        assert wait_result(redis_server, reply_to)["ok"] is True

        (worker,) = children(pool.process.pid)
        grandchildren = children(worker)
        assert len(grandchildren) >= 2, f"the worker's scheduler and renderer: {grandchildren}"
        os.kill(worker, signal.SIGKILL)

        # Each orphan is adopted by the pool (never init) and ended and reaped by it.
        wait_until(
            lambda: all(state(pid) is None for pid in grandchildren),
            ORPHAN_GONE_S,
            "the dead worker's children to end",
        )
        # The pool went on: a new worker, no zombie left under the supervisor.
        wait_until(lambda: client.scard(names.rq_queue_workers_key(queue)) == 1, 90, "a respawn")
        time.sleep(1.5)
        assert [p for p in children(pool.process.pid) if state(p) == "Z"] == []
    finally:
        adopted_elsewhere = [p for p in grandchildren if state(p) not in (None, "Z")]
        pool.stop()
        for pid in adopted_elsewhere:
            # Before the fix these ran on under init: end them so they outlive no test.
            os.kill(pid, signal.SIGKILL)
    assert pool.process.returncode == 0
