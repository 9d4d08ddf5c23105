"""`jobs.scan`: fetch each image a payload names, scan it, publish the result.

A plain function over the worker's context (worker.queue.context), as in arq: RQ calls it
with the context built at worker start, the run it belongs to, and the payload. By then
the job envelope has been checked (worker.queue.envelope); the payload is validated here.

Input problems never raise: a bad payload, a refused or missing reference, a corrupt
image all end in a failure result with the engine's error code, published, counted and
logged by worker.queue.outcome like every other end of a job (the worker then files the
job in RQ's failed registry, never retried). Only infrastructure failures (Redis gone for
longer than the retries) raise, so that RQ runs the job again.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from worker import storage
from worker.engine import ScanResult
from worker.engine.results import ScanError
from worker.errors import ErrorCode, ScanFailed
from worker.queue import outcome, payloads
from worker.queue.context import JobContext, JobRun
from worker.queue.results import ImageResult, JobResult

log = structlog.get_logger("jobs.scan")


def scan(ctx: JobContext, run: JobRun, payload: object) -> dict[str, Any]:
    started = time.perf_counter()
    queue_wait = run.queue_wait_ms()
    try:
        request = payloads.parse(payload)
    except ScanFailed as failure:
        echo = payloads.echo(payload)
        result = JobResult.failed(
            ctx,
            run.job_id,
            failure.code,
            failure.message,
            request_id=echo.request_id,
            meta=echo.meta,
        )
        route: outcome.Route = echo
    else:
        result = JobResult.of(ctx, run.job_id)
        result.request_id, result.meta = request.request_id, request.meta
        result.batch = request.batch
        result.images = [_scan_one(ctx, ref, request, started) for ref in request.images]
        route = request
    result.timings_ms = {"queue_wait": queue_wait, "total": (time.perf_counter() - started) * 1e3}
    finished = outcome.finish(
        ctx, result, route, run.delivery, scanned=True, images=len(result.images)
    )
    return finished.document


def _scan_one(
    ctx: JobContext, ref: str, request: payloads.ScanRequest, started: float
) -> ImageResult:
    fetch_started = time.perf_counter()
    # No fetch retry is started that the job's deadline would cut off.
    until = None
    if request.deadline_ms is not None:
        until = time.monotonic() + request.deadline_ms / 1000 - (fetch_started - started)
    try:
        reference = storage.parse_reference(ref, ctx.settings)
        data = storage.fetch(reference, ctx.settings, deadline=until)
    except ScanFailed as failure:
        fetch_ms = (time.perf_counter() - fetch_started) * 1000.0
        error = ScanError(failure.code, failure.message)
        return ImageResult(ref, ScanResult(error=error), fetch_ms)
    fetch_ms = (time.perf_counter() - fetch_started) * 1000.0
    deadline = request.deadline_ms
    if deadline is not None:
        # The deadline covers the whole job, fetches included.
        remaining = deadline - (time.perf_counter() - started) * 1000.0
        if remaining <= 0:
            error = ScanError(ErrorCode.DEADLINE_EXCEEDED, f"{deadline} ms passed while fetching")
            return ImageResult(ref, ScanResult(error=error), fetch_ms)
        deadline = max(1, int(remaining))
    result = ctx.engine.scan(data, deadline_ms=deadline, want=request.want)
    return ImageResult(ref, result, fetch_ms)
