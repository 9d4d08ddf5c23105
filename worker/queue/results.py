"""The one result record of a queue job, success or failure (docs/protocol.md, Result).

`jobs.scan` builds it from the engine's results; the worker builds it for failures that
end a job before or outside the scan (a refused or malformed job, a timeout, a lost
worker). Either way the same `to_dict()` shapes the published document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.engine import ScanResult
from worker.engine.results import ScanError
from worker.errors import ErrorCode
from worker.queue.context import JobContext

# An image reference is echoed in its item so a producer can match items to its refs;
# a reference longer than any real key or path is cut, and so is any message.
ECHO_REFERENCE_CHARS = 1024
MESSAGE_CHARS = 500


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(slots=True)
class ImageResult:
    """One image of a job: its reference, what the engine found, and the fetch time."""

    image: str
    result: ScanResult
    fetch_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.result.ok

    def to_dict(self) -> dict[str, Any]:
        document = {"image": clip(self.image, ECHO_REFERENCE_CHARS)} | self.result.to_dict()
        if self.result.error is not None:
            document["error"] = _error(self.result.error)
        document["timings_ms"] = {"fetch": self.fetch_ms, **self.result.timings_ms}
        return document


@dataclass(slots=True)
class JobResult:
    """A job's result. `failure` is set when the job ended before its images were scanned
    (then `images` is empty); otherwise `images` holds one result per reference."""

    job_id: str
    worker: str
    backend: str
    model: str | None
    request_id: str | None = None
    meta: Any = None
    batch: bool = False
    images: list[ImageResult] = field(default_factory=list)
    failure: ScanError | None = None
    timings_ms: dict[str, float | None] = field(default_factory=dict)
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(cls, ctx: JobContext, job_id: str) -> JobResult:
        return cls(job_id, ctx.worker, ctx.backend, ctx.model)

    @classmethod
    def failed(
        cls,
        ctx: JobContext,
        job_id: str,
        code: ErrorCode,
        message: str,
        *,
        request_id: str | None = None,
        meta: Any = None,
    ) -> JobResult:
        result = cls.of(ctx, job_id)
        result.failure = ScanError(code, message)
        result.request_id, result.meta = request_id, meta
        return result

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error(self) -> ScanError | None:
        if self.failure is not None:
            return self.failure
        return next((image.result.error for image in self.images if not image.ok), None)

    def to_dict(self) -> dict[str, Any]:
        error = self.error
        document: dict[str, Any] = {
            "job_id": self.job_id,
            "request_id": self.request_id,
            "meta": self.meta,
            "worker": self.worker,
            "backend": self.backend,
            "model": self.model,
            "ok": error is None,
            "error": _error(error) if error else None,
        }
        timings: dict[str, float | None] = {}
        if self.failure is not None or not self.images:
            document["codes"] = []
        elif self.batch:
            document["items"] = [image.to_dict() for image in self.images]
        else:
            single = self.images[0].to_dict()
            timings = single.pop("timings_ms")
            document.update(single)
        document["finished_at"] = self.finished_at.isoformat()
        document["timings_ms"] = {**timings, **self.timings_ms}
        return document


def _error(error: ScanError) -> dict[str, str]:
    return {"code": str(error.code), "message": clip(error.message, MESSAGE_CHARS)}
