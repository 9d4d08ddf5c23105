"""`jobs.scan`: fetch each image a payload names, scan it, publish the result.

Input problems never raise: a bad payload, a refused or missing reference, a corrupt
image all end in a published failure result with the engine's error code. Only
infrastructure failures (Redis gone for longer than the retries) raise, so that RQ
runs the job again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import structlog
from rq import get_current_job

from worker import storage
from worker.engine import ScanResult
from worker.engine.errors import ErrorCode, ScanFailed
from worker.engine.results import ScanError
from worker.queue import payloads, replies, runtime

log = structlog.get_logger("jobs.scan")


def scan(payload: object) -> dict[str, Any]:
    started = time.perf_counter()
    job = get_current_job()
    job_id = job.id if job else "local"
    settings = runtime.settings()
    queue_wait = _queue_wait_ms(job)
    document = _envelope(job_id, payload, queue_wait)
    reply_to = payloads.peek_reply_to(payload)
    try:
        request = payloads.parse(payload)
    except ScanFailed as failure:
        document.update(ok=False, error=ScanError(failure.code, failure.message).to_dict())
    else:
        reply_to = request.reply_to
        document.update(request_id=request.request_id, meta=request.meta)
        items = [_scan_one(ref, request, settings, started) for ref in request.images]
        if request.batch:
            document["items"] = items
            document["ok"] = all(item["ok"] for item in items)
            failed = next((item["error"] for item in items if not item["ok"]), None)
            document["error"] = failed
        else:
            document.update(items[0])
    document["finished_at"] = datetime.now(UTC).isoformat()
    document["timings_ms"] = {
        **document.get("timings_ms", {}),
        "queue_wait": queue_wait,
        "total": (time.perf_counter() - started) * 1000.0,
    }
    delivered = replies.publish(runtime.connection(), document, settings, reply_to)
    _observe(document)
    log.info(
        "job_finished",
        job_id=job_id,
        outcome="ok" if document["ok"] else "failed",
        error=(document.get("error") or {}).get("code"),
        delivered=delivered,
        images=len(document.get("items", [None])),
        timings_ms=_rounded(document["timings_ms"]),
    )
    return document


def _observe(document: dict[str, Any]) -> None:
    from worker import metrics  # imported in the worker process: see worker.metrics_env

    for item in document.get("items", [document]):
        if "timings_ms" in item or item.get("error"):
            metrics.observe_scan(item, "queue")
    error = document.get("error")
    metrics.JOBS.labels(error["code"] if error else "ok").inc()


def _envelope(job_id: str, payload: object, queue_wait: float | None) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "request_id": payload.get("request_id") if isinstance(payload, dict) else None,
        "meta": payload.get("meta") if isinstance(payload, dict) else None,
        "worker": runtime.worker_name(getattr(get_current_job(), "worker_name", None)),
        "backend": runtime.backend(),
        "model": runtime.model(),
        "ok": False,
        "error": None,
    }


def _scan_one(
    ref: str, request: payloads.ScanRequest, settings: Any, started: float
) -> dict[str, Any]:
    item: dict[str, Any] = {"image": ref}
    fetch_started = time.perf_counter()
    try:
        data = storage.fetch(storage.parse_reference(ref, settings), settings)
    except ScanFailed as failure:
        result = ScanResult(error=ScanError(failure.code, failure.message))
        fetch_ms = (time.perf_counter() - fetch_started) * 1000.0
        return item | result.to_dict() | {"timings_ms": {"fetch": fetch_ms}}
    fetch_ms = (time.perf_counter() - fetch_started) * 1000.0
    deadline = request.deadline_ms
    if deadline is not None:
        # The deadline covers the whole job, fetches included.
        remaining = deadline - (time.perf_counter() - started) * 1000.0
        if remaining <= 0:
            result = ScanResult(
                error=ScanError(ErrorCode.DEADLINE_EXCEEDED, f"{deadline} ms passed while fetching")
            )
            return item | result.to_dict() | {"timings_ms": {"fetch": fetch_ms}}
        deadline = max(1, int(remaining))
    result = runtime.engine().scan(data, deadline_ms=deadline, want=request.want)
    return item | result.to_dict() | {"timings_ms": {"fetch": fetch_ms, **result.timings_ms}}


def _queue_wait_ms(job: Any) -> float | None:
    if job is None or job.enqueued_at is None:
        return None
    enqueued = job.enqueued_at.replace(tzinfo=job.enqueued_at.tzinfo or UTC)
    return max(0.0, (datetime.now(UTC) - enqueued).total_seconds() * 1000.0)


def _rounded(timings: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in timings.items()}
