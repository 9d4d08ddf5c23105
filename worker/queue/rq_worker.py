"""RQ, configured for this service: JSON only, our job functions only, fast recovery.

- Jobs are (de)serialised as JSON; pickle never touches the queue.
- `QrJob.func` refuses any function but ours before anything is imported, so a
  producer naming `os.system` gets a `refused_job` result and nothing runs.
- Every job ends in a published result: final failures (exceptions, timeouts, a killed
  work-horse, a worker that vanished) are reported with a stable error code.
- Dead workers are noticed within seconds, not RQ's default ten minutes or more:
  short heartbeats, a short maintenance interval, and a retry budget on every job so
  an abandoned one is queued again instead of only being marked failed.
"""

from __future__ import annotations

import faulthandler
import threading
import time
from typing import Any

import structlog
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import AbandonedJobError, DeserializationError
from rq.job import Job
from rq.serializers import JSONSerializer

from worker.engine.errors import ErrorCode
from worker.queue import replies, runtime
from worker.queue.names import ALLOWED_FUNCTIONS
from worker.queue.payloads import peek_reply_to

log = structlog.get_logger("worker")

# Seconds a heartbeat outlives its interval: long enough for a busy machine, short
# enough that a dead worker's job is requeued well inside two minutes.
HEARTBEAT_GRACE = 10
JOB_MONITORING_INTERVAL = 5
WATCHDOG_GRACE = 5


class RefusedJob(Exception):
    """The job names a function that is not one of ours."""


class QrJob(Job):
    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in ALLOWED_FUNCTIONS:
            raise RefusedJob(
                f"job function {name!r} is not allowed; allowed: {sorted(ALLOWED_FUNCTIONS)}"
            )
        return super().func


class QrWorkerMixin:
    """Our policies, on top of either of RQ's execution models (see QrWorker)."""

    job_monitoring_interval: int
    connection: Any
    _stopped_job_id: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = runtime.settings()
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = QrJob
        kwargs["maintenance_interval"] = settings.recovery_interval
        kwargs["job_monitoring_interval"] = JOB_MONITORING_INTERVAL
        # The dequeue timeout is worker_ttl - 15: keep it short so maintenance runs often.
        kwargs["worker_ttl"] = settings.recovery_interval + 15
        kwargs["exception_handlers"] = [report_abandoned]
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        started = time.perf_counter()
        runtime.engine().warm_up()  # loaded and warmed before the first job; horses inherit it
        log.info(
            "engine_ready",
            backend=runtime.backend(),
            model=runtime.model(),
            model_threads=settings.model_threads,
            stages=[stage.name for stage in runtime.engine().stages],
            ms=round((time.perf_counter() - started) * 1000.0, 1),
        )
        from worker import metrics  # here, in the worker process: see worker.metrics_env

        metrics.set_model(runtime.backend(), runtime.model())

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        remaining = (job.timeout or runtime.settings().job_timeout) - working_time
        return int(max(1, min(remaining, self.job_monitoring_interval))) + HEARTBEAT_GRACE

    def prepare_execution(self, job: Job) -> Any:
        # Producers in other languages set no retry budget; give every job one, so a
        # job whose worker died is run again rather than only marked failed.
        if give_retry_budget(job):
            self.connection.hset(
                job.key, mapping={"retries_left": job.retries_left, "retry_intervals": "[0]"}
            )
        if job.timeout is None:
            job.timeout = runtime.settings().job_timeout
        return super().prepare_execution(job)  # type: ignore[misc]

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        # Runs in the work-horse. The watchdog is a C thread: it fires even while a
        # decoder holds the GIL in native code, and exits the horse, which RQ then
        # handles as a failed run (retried while the budget lasts).
        # RQ's own timeout (a Python-level alarm) fires first and fails the job cleanly;
        # the watchdog, a little later, only ends a process stuck where Python cannot run.
        timeout = job.timeout or runtime.settings().job_timeout
        faulthandler.dump_traceback_later(timeout + WATCHDOG_GRACE, exit=True)
        # RQ's SimpleWorker sends no heartbeats while a job runs; without them a long job
        # would look abandoned, and a dead worker's job could only be recovered after its
        # whole timeout. A thread keeps the lease short and fresh instead.
        stop = self._heartbeat_thread(job, execution) if isinstance(self, SimpleWorker) else None
        try:
            return super().perform_job(job, queue, execution)  # type: ignore[misc]
        finally:
            faulthandler.cancel_dump_traceback_later()
            if stop is not None:
                stop.set()

    def _heartbeat_thread(self, job: Job, execution: Any) -> threading.Event:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.job_monitoring_interval):
                try:
                    self.maintain_heartbeats(job, execution)  # type: ignore[attr-defined]
                except Exception as exc:  # Redis away: the next beat tries again
                    log.warning("heartbeat_failed", job_id=job.id, error=repr(exc))

        threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True).start()
        return stop

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        code = failure_code(exc_string)
        # A job can fail before it ever started (RQ's intermediate-queue cleanup after a
        # worker lost Redis mid-dequeue); it still deserves its retries.
        give_retry_budget(job)
        if code in (ErrorCode.REFUSED_JOB, ErrorCode.INVALID_PAYLOAD, ErrorCode.DEADLINE_EXCEEDED):
            job.retries_left = 0  # running it again cannot help
        if not (job.should_retry and self._stopped_job_id != job.id):
            publish_failure(job, code, exc_string)
        else:
            log.warning("job_retry", job_id=job.id, error=code, retries_left=job.retries_left)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)  # type: ignore[misc]


class QrWorker(QrWorkerMixin, Worker):
    """QRW_WORKER_CLASS=fork: forks a work-horse per job from a parent that loaded the engine once.

    The horse inherits the warmed engine copy-on-write; a horse stuck in native code is
    ended by a C-level watchdog (faulthandler), and one that dies is noticed at once by
    its parent, so the job is retried without waiting for heartbeats to expire.
    """


class QrSimpleWorker(QrWorkerMixin, SimpleWorker):
    """The default (QRW_WORKER_CLASS=simple): jobs run in the worker process itself.

    No fork per job: docs/benchmarks.md measures about 3x the single-image throughput
    of the forking worker. The hard backstop still holds: the faulthandler watchdog
    ends the whole worker process when a job overruns inside native code; the pool
    respawns it and the job, its lease no longer renewed, is recovered and retried.
    """


def worker_class(name: str) -> type[Worker] | type[SimpleWorker]:
    return QrWorker if name == "fork" else QrSimpleWorker


def give_retry_budget(job: Job) -> bool:
    """Give a job the configured retries if its producer set none; True if it had none."""
    if job.retries_left is not None:
        return False
    job.retries_left = max(0, runtime.settings().max_attempts - 1)
    job.retry_intervals = [0]
    return True


def failure_code(exc_string: str) -> ErrorCode:
    # Classify by the exception itself (the last line), never by traceback source lines,
    # which quote RQ's own code (`JobTimeoutException` appears in its timeout wrapper).
    lines = [line for line in exc_string.strip().splitlines() if line.strip()]
    exc_string = lines[-1] if lines else ""
    if "RefusedJob" in exc_string:
        return ErrorCode.REFUSED_JOB
    if "DeserializationError" in exc_string or "JSONDecodeError" in exc_string:
        return ErrorCode.INVALID_PAYLOAD
    if "JobTimeoutException" in exc_string:
        return ErrorCode.DEADLINE_EXCEEDED
    if "Work-horse terminated" in exc_string or "AbandonedJobError" in exc_string:
        return ErrorCode.WORKER_LOST
    return ErrorCode.INTERNAL_ERROR


def publish_failure(job: Job, code: ErrorCode, detail: str) -> None:
    try:
        payload = job.args[0] if job.args else None
    except DeserializationError:
        payload = None
    last_line = detail.strip().splitlines()[-1] if detail.strip() else code.value
    document = {
        "job_id": job.id,
        "request_id": payload.get("request_id") if isinstance(payload, dict) else None,
        "meta": payload.get("meta") if isinstance(payload, dict) else None,
        "worker": runtime.worker_name(job.worker_name),
        "backend": runtime.backend(),
        "model": runtime.model(),
        "ok": False,
        "codes": [],
        "error": {"code": code.value, "message": last_line[:500]},
        "timings_ms": {},
    }
    replies.publish(runtime.connection(), document, runtime.settings(), peek_reply_to(payload))
    log.error("job_failed", job_id=job.id, error=code.value, detail=last_line[:500])


def report_abandoned(job: Job, exc_type: type, exc_value: BaseException, tb: Any) -> bool:
    """RQ exception handler: the final word on a job whose worker vanished."""
    # RQ reads the budget after this handler returns, so one given here is used.
    give_retry_budget(job)
    if exc_type is AbandonedJobError and not (job.retries_left and job.retries_left > 0):
        publish_failure(job, ErrorCode.WORKER_LOST, "the worker running this job died")
    elif exc_type is AbandonedJobError:
        log.warning("job_requeued_after_worker_loss", job_id=job.id, retries_left=job.retries_left)
    return True  # let RQ's own handlers run too
