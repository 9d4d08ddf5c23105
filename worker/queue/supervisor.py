"""`qrw worker`: N worker processes under RQ's WorkerPool, which respawns any that dies.

SIGTERM or SIGINT asks every worker for a warm shutdown: each finishes its current job,
then exits, and so does the pool. Before any worker starts, the pool checks that Redis
persists (see worker.queue.persistence) and logs an error when it does not, and takes its
metrics port: a port held by another process stops it (`MetricsPortTaken`).

The workers are forks of this process: what it has imported before they start, they
share (see `preload`).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib

import redis
import structlog
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from worker.metrics_env import prepare_multiprocess
from worker.queue import names, persistence, runtime
from worker.queue.rq_worker import QrJob, QrQueue, worker_class
from worker.settings import Settings


def run(settings: Settings, queues: tuple[str, ...], workers: int, *, burst: bool = False) -> int:
    connection = runtime.connect(settings.redis_url)
    check_persistence(connection)
    register_queues(connection, queues)
    if settings.metrics_port:
        serve_metrics(settings, queues)
    preload(settings)
    pool = WorkerPool(
        queues,
        connection=connection,
        num_workers=workers,
        worker_class=worker_class(settings.worker_class),
        serializer=JSONSerializer,
        job_class=QrJob,
        queue_class=QrQueue,
    )
    pool.start(burst=burst, logging_level=settings.log_level.upper())
    return 0


# What every worker imports while it builds and warms its engine, beyond what this process
# has imported already: Pillow's format plugins, PDFium. Imported here, before the fork,
# their code objects and tables are one copy for the whole pool instead of one per worker.
PRELOADED = ("PIL.Image", "PIL.ImageOps", "PIL.ImageSequence", "pypdfium2")
RUNTIMES = {"onnx": "onnxruntime", "torch": "torch"}


def preload(settings: Settings) -> list[str]:
    """Import the workers' libraries in the supervisor, then freeze the garbage collector's
    view of them (gc.freeze), so the forks share those pages instead of copying them.

    Only imports: nothing here runs a model, a codec or a thread pool, which a fork would
    not carry over. Measured with `python -m worker.bench.memory` (issue 11): each further
    ONNX worker 40 -> 26 MB of PSS. Returns the modules imported.
    """
    names = [*PRELOADED]
    runtime_module = RUNTIMES.get(settings.backend)
    if runtime_module:
        names.append(runtime_module)
    loaded = []
    for name in names:
        # A runtime that is not installed is reported by the worker that needs it, with
        # the remedy (worker.engine.detector.sessions.ModelUnavailable).
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
            loaded.append(name)
    if "PIL.Image" in loaded:
        from PIL import Image

        Image.init()  # every format plugin, as the first image opened would
    gc.collect()
    gc.freeze()
    return loaded


def register_queues(connection: redis.Redis, queues: tuple[str, ...]) -> None:
    """List the pool's queues in rq:queues. RQ adds a queue there only when something is
    enqueued on it, and dashboards and exporters (rq-dashboard, rq-exporter) list only what
    is there: a queue this pool serves would stay invisible to them until its first job
    (qr-backfill, often for days). Redis away: the pool starts anyway (its workers ride the
    outage out) and the first enqueue registers the queue."""
    try:
        connection.sadd(names.RQ_QUEUES, *(names.rq_queue_key(queue) for queue in queues))
    except redis.RedisError as exc:
        structlog.get_logger("worker").warning(
            "queues_not_registered", queues=list(queues), error=str(exc)
        )


def check_persistence(connection: redis.Redis) -> persistence.Persistence:
    """Say loudly when a Redis restart would lose every queued job; never stop the workers
    for it (jobs still run, and ops may be fixing Redis as we speak)."""
    found = persistence.check(connection)
    log = structlog.get_logger("worker")
    fields = {"mode": found.mode.value, "appendonly": found.appendonly, "save": found.save}
    if found.mode is persistence.Mode.NONE:
        log.error("redis_not_persistent", message=found.summary(), **fields)
    elif found.mode is persistence.Mode.UNKNOWN:
        log.warning("redis_persistence_unknown", message=found.summary(), **fields)
    elif found.mode is persistence.Mode.RDB:
        log.warning("redis_persistence_snapshots_only", message=found.summary(), **fields)
    else:
        log.info("redis_persistence", **fields)
    return found


class MetricsPortTaken(Exception):
    """QRW_METRICS_PORT cannot be served: the pool must not start."""


def serve_metrics(settings: Settings, queues: tuple[str, ...]) -> None:
    """All worker processes' metrics and the queue gauges, on one port, from this parent.

    The multiprocess folder is set before any worker process exists, so every one of
    them records into it; the parent itself never scans.
    """
    folder = prepare_multiprocess()
    from prometheus_client import start_http_server

    from worker import metrics

    # Not the pool's client (no read timeout): a Redis that hangs held every scrape, and a
    # thread of the metrics server, for good; the pool looked down, not Redis.
    scraping = metrics.scrape_connection(settings.redis_url)
    registry = metrics.multiprocess_registry(
        [
            metrics.QueueCollector(scraping, queues),
            metrics.BackfillCollector(scraping),
            metrics.PersistenceCollector(scraping),
            metrics.PoolMemoryCollector(),
            metrics.RedisUpCollector(settings.redis_url),
        ]
    )
    port = settings.metrics_port
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        # Running on without metrics hid the pool from its alerts, while Prometheus scraped
        # whoever holds the port (another pool) as if it were this one.
        held = (
            ": another process holds it (another pool?), and Prometheus would scrape its "
            "numbers as this pool's"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise MetricsPortTaken(
            f"cannot serve metrics on QRW_METRICS_PORT={port} ({exc.strerror}){held}; set "
            "QRW_METRICS_PORT to a free port, or QRW_METRICS_PORT=0 to run without metrics"
        ) from exc
    structlog.get_logger("worker").info("metrics_serving", port=port, multiprocess_dir=folder)
