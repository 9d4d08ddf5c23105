"""The end of a job: the one place an outcome is published, counted and logged.

A job ends in one of several processes: the worker that ran it (`jobs.scan`, or its failure
handling: a timeout, a crash, a killed work-horse), the worker that took it off the queue
and refused it (worker.queue.intake), or RQ's maintenance pass in any worker of any pool,
when the worker that ran it vanished. Each calls `finish` (or `dead_letter`, for an id no
result can be named after), in the spirit of dramatiq's middleware hooks: whoever ends the
job, the result goes out the same way, `qrw_jobs_total` counts it once, and one log line
says so. Every one of these processes records into the pool's prometheus-client
multiprocess folder (worker.metrics_env), so a count made anywhere reaches the pool's
/metrics.

"Once": the count follows the delivery. A job run again after its worker died publishes a
second time under the same delivery token; that publish writes nothing
(worker.queue.replies) and is not counted again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import structlog
from rq.utils import now, utcformat

from worker.errors import ErrorCode
from worker.queue import names
from worker.queue.context import JobContext
from worker.queue.results import MESSAGE_CHARS, JobResult, clip

log = structlog.get_logger("worker")

DEAD_LETTER_MAXLEN = 10_000


class Route(Protocol):
    """Where a result goes and how long it stays: a checked request
    (worker.queue.payloads.ScanRequest) or what a failed job's payload allows (Echo)."""

    @property
    def reply_to(self) -> str | None: ...

    @property
    def result_ttl(self) -> int | None: ...

    @property
    def stream(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Finished:
    """A published outcome: the document, and whether this call delivered it (False when
    this enqueue's result was out already)."""

    document: dict[str, Any]
    delivered: bool


def finish(
    ctx: JobContext,
    result: JobResult,
    route: Route,
    delivery: str,
    *,
    event: str = "job_finished",
    scanned: bool = False,
    **fields: Any,
) -> Finished:
    """Publish the job's result, count it, log it: every job that has a result ends here.

    `delivery` names the enqueue (worker.queue.job.delivery_of, or envelope.raw_delivery for
    a job refused before RQ read it). `event` is the log event (`job_finished`, `job_failed`,
    `job_rejected`); `fields` are added to it. `scanned`: the result holds scans that ran
    here (jobs.scan), observed in the scan metrics.
    """
    document = result.to_dict()
    delivered = ctx.publisher.publish(
        document, route.reply_to, delivery, result_ttl=route.result_ttl, stream=route.stream
    )
    error = document.get("error")
    outcome = error["code"] if error else "ok"
    _observe(document, outcome, delivered, scanned)
    log_fields = {
        "job_id": result.job_id,
        "outcome": "ok" if error is None else "failed",
        "error": error["code"] if error else None,
        "delivered": delivered,
        **fields,
        "timings_ms": _rounded(document.get("timings_ms") or {}),
    }
    if error is not None and event != "job_finished":
        log.error(event, detail=error["message"], **log_fields)
    else:
        log.info(event, **log_fields)
    return Finished(document, delivered)


def dead_letter(
    connection: redis.Redis,
    ctx: JobContext,
    queue: str,
    intermediate_key: str,
    raw_id: bytes,
    job_id: str,
    code: str,
    message: str,
) -> None:
    """A job no result can be given (its id cannot name one, or it was popped again after
    its enqueue was answered): one entry on the dead-letter stream, the id off RQ's
    intermediate list, and the count. The caller logs why."""
    with connection.pipeline(transaction=True) as pipe:
        pipe.xadd(
            names.DEAD_LETTER_STREAM,
            {
                "job_id": job_id,
                "queue": queue,
                "code": code,
                "message": message,
                "worker": ctx.worker,
                "at": utcformat(now()),
            },
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
        pipe.lrem(intermediate_key, 1, raw_id)
        pipe.execute()
    _count(code)


def failure_text(code: ErrorCode | str, message: str) -> str:
    """A failed job's failure text as RQ's tools show it (`exc_info`, the failed Result):
    the error code and message as JSON, never a traceback."""
    return json.dumps(
        {"code": str(code), "message": clip(message, MESSAGE_CHARS)},
        ensure_ascii=False,
        separators=(", ", ": "),
    )


def _observe(document: dict[str, Any], outcome: str, delivered: bool, scanned: bool) -> None:
    from worker import metrics  # imported in the worker process: see worker.metrics_env

    # Every scan that ran is observed (it cost what it cost, even on a second run); the job
    # itself only with its delivery, so a job run twice is one job.
    for item in document.get("items", [document]) if scanned else ():
        if "timings_ms" in item or item.get("error"):
            metrics.observe_scan(item, "queue")
    if delivered:
        metrics.JOBS.labels(outcome).inc()


def _count(outcome: str) -> None:
    from worker import metrics  # imported in the worker process: see worker.metrics_env

    metrics.JOBS.labels(outcome).inc()


def _rounded(timings: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in timings.items()}
