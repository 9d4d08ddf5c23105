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
from typing import Any

import structlog
from rq import Queue, Worker
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


class QrWorker(Worker):
    """A forking RQ worker that loads the engine once, before taking jobs.

    The work-horse forked per job inherits the loaded engine (copy-on-write), and a
    horse stuck in native code is killed by a C-level watchdog, not a Python signal.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = runtime.settings()
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = QrJob
        kwargs["maintenance_interval"] = settings.recovery_interval
        kwargs["job_monitoring_interval"] = JOB_MONITORING_INTERVAL
        # The dequeue timeout is worker_ttl - 15: keep it short so maintenance runs often.
        kwargs["worker_ttl"] = settings.recovery_interval + 15
        kwargs["exception_handlers"] = [report_abandoned]
        super().__init__(*args, **kwargs)
        runtime.engine().warm_up()  # loaded and warmed before the first job; horses inherit it

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        remaining = (job.timeout or runtime.settings().job_timeout) - working_time
        return int(max(1, min(remaining, self.job_monitoring_interval))) + HEARTBEAT_GRACE

    def prepare_execution(self, job: Job) -> Any:
        # Producers in other languages set no retry budget; give every job one, so a
        # job whose worker died is run again rather than only marked failed.
        if job.retries_left is None:
            job.retries_left = max(0, runtime.settings().max_attempts - 1)
            job.retry_intervals = [0]
            self.connection.hset(
                job.key, mapping={"retries_left": job.retries_left, "retry_intervals": "[0]"}
            )
        if job.timeout is None:
            job.timeout = runtime.settings().job_timeout
        return super().prepare_execution(job)

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        # Runs in the work-horse. The watchdog is a C thread: it fires even while a
        # decoder holds the GIL in native code, and exits the horse, which RQ then
        # handles as a failed run (retried while the budget lasts).
        faulthandler.dump_traceback_later(job.timeout or runtime.settings().job_timeout, exit=True)
        try:
            return super().perform_job(job, queue, execution)
        finally:
            faulthandler.cancel_dump_traceback_later()

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        code = failure_code(exc_string)
        if code in (ErrorCode.REFUSED_JOB, ErrorCode.INVALID_PAYLOAD):
            job.retries_left = 0  # running it again cannot help
        if not (job.should_retry and self._stopped_job_id != job.id):
            publish_failure(job, code, exc_string)
        else:
            log.warning("job_retry", job_id=job.id, error=code, retries_left=job.retries_left)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)


def failure_code(exc_string: str) -> ErrorCode:
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
    if exc_type is AbandonedJobError and not (job.retries_left and job.retries_left > 0):
        publish_failure(job, ErrorCode.WORKER_LOST, "the worker running this job died")
    elif exc_type is AbandonedJobError:
        log.warning("job_requeued_after_worker_loss", job_id=job.id, retries_left=job.retries_left)
    return True  # let RQ's own handlers run too
