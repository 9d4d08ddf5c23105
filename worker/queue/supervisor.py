"""`qrw worker`: N worker processes under RQ's WorkerPool, which respawns any that dies.

SIGTERM or SIGINT asks every worker for a warm shutdown: each finishes its current job,
then exits, and so does the pool.
"""

from __future__ import annotations

from rq import Queue
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from worker.queue import runtime
from worker.queue.rq_worker import QrJob, worker_class
from worker.settings import Settings


def run(settings: Settings, queues: tuple[str, ...], workers: int, *, burst: bool = False) -> int:
    connection = runtime.connect(settings.redis_url)
    pool = WorkerPool(
        queues,
        connection=connection,
        num_workers=workers,
        worker_class=worker_class(settings.worker_class),
        serializer=JSONSerializer,
        job_class=QrJob,
        queue_class=Queue,
    )
    pool.start(burst=burst, logging_level=settings.log_level.upper())
    return 0
