"""A real pool with the memory changes of issue 11: it still reads every code, and RQ's
scheduler no longer carries a copy of a worker's engine.

`qrw worker --workers 2` against a real Redis: the workers are forks of a supervisor that
imported their libraries first; each releases its detectors' arena when it goes idle, and
the scheduler RQ forks from one of them is forked before that worker loads its engine.
"""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path

import pytest

from models.synth import digital_invoice, photo_invoice
from tests.conftest import reply_list, wait_result
from tests.services import RedisServer, WorkerProcess, wait_until
from worker.procfs import children
from worker.queue import names, producer
from worker.queue.rq_worker import IDLE_TRIM_S

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="memory is read from /proc"
)


def private_dirty_mib(pid: int) -> float:
    """Pages written that no other process maps: a forked page the parent later wrote
    becomes the child's alone."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no Private_Dirty line for {pid}")


def scan(redis_server: RedisServer, queue: str, path: Path) -> list[bytes]:
    reply_to = reply_list()
    producer.enqueue(
        redis_server.client(), {"image": f"file://{path}", "reply_to": reply_to}, queue=queue
    )
    result = wait_result(redis_server, reply_to)
    assert result["ok"] is True, result
    return sorted(base64.b64decode(code["bytes_b64"]) for code in result["codes"])


def test_a_warmed_pool_reads_every_code_before_and_after_its_workers_release_memory(
    redis_server: RedisServer, start_worker, file_root: Path
) -> None:
    samples = {
        "memory-photo.jpg": photo_invoice(5),
        "memory-digital.png": digital_invoice(6),
        "memory-two.jpg": photo_invoice(8, n_codes=2),
    }
    for name, sample in samples.items():
        (file_root / name).write_bytes(sample.data)
    queue = f"memory-{uuid.uuid4().hex[:8]}"
    pool: WorkerProcess = start_worker(redis_server.url, queue, workers=2)
    wait_until(
        lambda: redis_server.client().scard(names.rq_queue_workers_key(queue)) >= 2,
        120,
        "both workers to register",
    )
    expected = {name: sorted(c.payload for c in s.codes) for name, s in samples.items()}
    first = {name: scan(redis_server, queue, file_root / name) for name in samples}
    assert first == expected

    # Idle long enough for every worker to give its arena back; then the same again.
    time.sleep(IDLE_TRIM_S + 2)
    again = {name: scan(redis_server, queue, file_root / name) for name in samples}
    assert again == expected
    assert pool.process.poll() is None


def test_rqs_scheduler_holds_none_of_the_engine_of_the_worker_it_was_forked_from(
    redis_server: RedisServer, start_worker, file_root: Path
) -> None:
    """It was forked after the engine was loaded: it kept a copy-on-write share of the
    whole engine, and every page the worker wrote later (the detectors' arena, on each
    job) was copied, the scheduler keeping the old one: about 75 MB more per pool."""
    queue = f"memory-{uuid.uuid4().hex[:8]}"
    pool: WorkerProcess = start_worker(redis_server.url, queue, workers=1)
    wait_until(
        lambda: redis_server.client().scard(names.rq_queue_workers_key(queue)) >= 1,
        120,
        "the worker to register",
    )
    workers = children(pool.process.pid)
    assert len(workers) == 1
    scheduler = wait_until(lambda: children(workers[0]), 30, "RQ's scheduler process")[0]
    path = file_root / "memory-scheduler.jpg"
    path.write_bytes(photo_invoice(9).data)
    assert scan(redis_server, queue, path)  # the worker has written to its engine's memory
    # Before the fix: 51 MB (the old copy of the worker's arena); since: about 8 MB, a
    # bare worker's own.
    assert private_dirty_mib(scheduler) < 25
