"""`qrw worker`: N worker processes under RQ's WorkerPool, which respawns any that dies.

SIGTERM or SIGINT asks every worker for a warm shutdown: each finishes its current job,
then exits, and so does the pool. The pool owns every process its workers start (RQ's
scheduler, a PDF renderer child, a work-horse): it is their subreaper, so a worker killed
outright leaves them to the pool, which stops and reaps them (`OwningWorkerPool`).
Before any worker starts, the pool checks that Redis persists (see
worker.queue.persistence) and logs an error when it does not, and takes its metrics port:
a port held by another process stops it (`MetricsPortTaken`).

The workers are forks of this process: what it has imported before they start, they
share (see `preload`).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import gc
import importlib
import multiprocessing.connection
import os
import signal
import time

import redis
import structlog
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerData, WorkerPool

from worker.backoff import backoff_s
from worker.metrics_env import prepare_multiprocess
from worker.procfs import children, cmdline
from worker.queue import names, persistence, runtime
from worker.queue.rq_worker import QrJob, QrQueue, worker_class
from worker.settings import Settings


def run(settings: Settings, queues: tuple[str, ...], workers: int, *, burst: bool = False) -> int:
    connection = runtime.connect(settings)
    check_persistence(connection)
    register_queues(connection, queues)
    if settings.metrics_port:
        serve_metrics(settings, queues)
    preload(settings)
    become_subreaper()
    pool = OwningWorkerPool(
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


# prctl(2) option: orphans below this process are re-parented to it instead of init.
PR_SET_CHILD_SUBREAPER = 36
# How long one look of a stopping pool waits for its workers to end (a worker stops in
# about a second: its command listener and RQ's scheduler each wake within one).
STOPPING_WAIT_S = 2.0
# An adopted orphan asked to stop with SIGTERM (RQ's scheduler then releases its locks) gets
# this long before SIGKILL.
ORPHAN_GRACE_S = 5.0


def become_subreaper() -> bool:
    """Make this process the reaper of every process below it. A worker killed with SIGKILL
    (the OOM killer, an operator) left RQ's scheduler it had forked to init: running outside
    the pool, out of its PSS and its SIGTERM, holding the queue's scheduler lock."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        structlog.get_logger("worker").warning(
            "pool_not_subreaper", error=os.strerror(error), message="orphans go to init"
        )
        return False
    return True


class OwningWorkerPool(WorkerPool):
    """RQ's WorkerPool, which also stops and reaps the processes it adopts as subreaper.

    RQ's pool waits only for the workers it started (multiprocessing's own handles); an
    orphan it adopted would stay a zombie, or run on, for good. Each pass of the pool's loop
    (once a second) asks every adopted process to stop, kills one still there after
    ORPHAN_GRACE_S, and reaps it; a stopping pool exits only once they are gone too.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.orphans: dict[int, float] = {}  # pid -> when it was asked to stop
        self.respawns = RespawnBackoff()

    def reap_workers(self) -> None:
        super().reap_workers()
        self.reap_orphans()

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)
        if self.status != self.Status.STOPPED:
            self.respawns.died(time.monotonic())
            structlog.get_logger("worker").warning(
                "pool_worker_died",
                pid=worker_data.pid,
                deaths_last_minute=len(self.respawns.deaths),
                respawn_in_s=round(self.respawns.wait_s(time.monotonic()), 1),
            )

    def check_workers(self, respawn: bool = True) -> None:
        # RQ's pass (reap, then start what is missing), the start held off while the
        # deaths this pass found (or earlier ones) ask for a wait.
        self.reap_workers()
        if not respawn or self.status == self.Status.STOPPED:
            return
        if self.respawns.wait_s(time.monotonic()) > 0:
            return
        for _ in range(self.num_workers - len(self.worker_dict)):
            self.start_worker(burst=self._burst, _sleep=self._sleep)

    def all_workers_have_stopped(self) -> bool:
        # RQ's stopping loop looks once, then sleeps a second: a worker that had exited just
        # after the look kept the pool (and a deploy) up to a second longer, 2.4 s for an
        # idle pool measured (python -m worker.bench.soak --stops 20). Waiting on the
        # workers' ends here lets the pool exit as soon as the last one has.
        pending = [data.process.sentinel for data in self.worker_dict.values()]
        deadline = time.monotonic() + STOPPING_WAIT_S
        while pending and (left := deadline - time.monotonic()) > 0:
            ended = multiprocessing.connection.wait(pending, timeout=left)
            pending = [sentinel for sentinel in pending if sentinel not in ended]
        return super().all_workers_have_stopped() and not self.orphans

    def reap_orphans(self) -> None:
        workers = {data.pid for data in self.worker_dict.values()}
        now = time.monotonic()
        for pid in children(os.getpid()):
            # A worker that has just exited is RQ's to reap (multiprocessing's handle): waiting
            # for it here would hide its end from the pool, which would never respawn it.
            if pid not in workers and pid not in self.orphans:
                self.orphans[pid] = now
                self._signal(pid, signal.SIGTERM)
                structlog.get_logger("worker").warning(
                    "pool_adopted_orphan", pid=pid, command=_command(pid)
                )
        for pid, asked in list(self.orphans.items()):
            try:
                ended, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                ended = pid
            if ended:
                del self.orphans[pid]
            elif now - asked > ORPHAN_GRACE_S:
                self._signal(pid, signal.SIGKILL)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# Deaths within this many seconds count as one crash loop.
RESPAWN_WINDOW_S = 60.0
# Longest wait before a worker that keeps dying is started again.
RESPAWN_BACKOFF_CAP_S = 30.0


class RespawnBackoff:
    """When the pool may start a worker again after one died.

    A worker that died alone in the last RESPAWN_WINDOW_S is replaced at once (the pool's
    next pass, within a second); each further death in the window doubles the wait (from
    about 1 s, jittered, up to RESPAWN_BACKOFF_CAP_S). A worker that dies as it starts (a
    corrupt model, a Redis that refused its writes) cost a whole engine load per respawn,
    39 times a minute in issue 18; now a few times a minute.
    """

    def __init__(self) -> None:
        self.deaths: collections.deque[float] = collections.deque()
        self.next_at = 0.0

    def died(self, now: float) -> None:
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > RESPAWN_WINDOW_S:
            self.deaths.popleft()
        if len(self.deaths) > 1:
            wait = backoff_s(len(self.deaths) - 2, first_s=1.0, cap_s=RESPAWN_BACKOFF_CAP_S)
            self.next_at = max(self.next_at, now + wait)

    def wait_s(self, now: float) -> float:
        return max(0.0, self.next_at - now)


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
    scraping = metrics.scrape_connection(settings)
    registry = metrics.multiprocess_registry(
        [
            metrics.QueueCollector(scraping, queues),
            metrics.BackfillCollector(scraping),
            metrics.PersistenceCollector(scraping),
            metrics.PoolMemoryCollector(),
            metrics.RedisUpCollector(settings),
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


def _command(pid: int) -> str:
    """An adopted process's command line, for the log: which of the workers' children
    outlived its parent."""
    try:
        return cmdline(pid).replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
