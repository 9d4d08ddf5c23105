"""`qrw worker`: N worker processes under RQ's WorkerPool, which respawns any that dies.

SIGTERM or SIGINT asks every worker for a warm shutdown: each finishes its current job,
then exits, and so does the pool.
"""

from __future__ import annotations

import structlog
from rq import Queue
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from worker.metrics_env import prepare_multiprocess
from worker.queue import runtime
from worker.queue.rq_worker import QrJob, worker_class
from worker.settings import Settings


def run(settings: Settings, queues: tuple[str, ...], workers: int, *, burst: bool = False) -> int:
    connection = runtime.connect(settings.redis_url)
    if settings.metrics_port:
        serve_metrics(settings, connection, queues)
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


def serve_metrics(settings: Settings, connection: object, queues: tuple[str, ...]) -> None:
    """All worker processes' metrics and the queue gauges, on one port, from this parent.

    The multiprocess folder is set before any worker process exists, so every one of
    them records into it; the parent itself never scans.
    """
    folder = prepare_multiprocess()
    from prometheus_client import start_http_server

    from worker import metrics

    registry = metrics.multiprocess_registry([metrics.QueueCollector(connection, queues)])
    log = structlog.get_logger("worker")
    try:
        start_http_server(settings.metrics_port, registry=registry)
    except OSError as exc:
        # Jobs matter more than their metrics: run without, and say so loudly.
        log.error("metrics_unavailable", port=settings.metrics_port, error=str(exc))
        return
    log.info("metrics_serving", port=settings.metrics_port, multiprocess_dir=folder)
