"""Stable, machine-readable reasons a scan can fail.

The codes are part of the public contract (the queue results and the HTTP shim carry
them), so they are only ever added to, never renamed.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    EMPTY_INPUT = "empty_input"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_IMAGE = "corrupt_image"
    IMAGE_TOO_LARGE = "image_too_large"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    NOT_FOUND = "not_found"
    READ_FAILED = "read_failed"
    # A PDF that needs a password to be read: a valid file, not a corrupt one.
    ENCRYPTED_DOCUMENT = "encrypted_document"
    # Raised around the engine by the queue worker.
    INVALID_PAYLOAD = "invalid_payload"
    REFUSED_REFERENCE = "refused_reference"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    REFUSED_JOB = "refused_job"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"
    # Raised by the HTTP shim.
    INVALID_REQUEST = "invalid_request"
    BUSY = "busy"
    REQUEST_TIMEOUT = "request_timeout"


class ScanFailed(Exception):
    """Raised inside the engine; `Engine.scan` turns it into `ScanResult.error`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DeadlineReached(Exception):
    """Raised by the decoding of a document when the scan's deadline passes between two
    pages or frames; the engine stops the cascade there and keeps the codes already read."""
