"""Stable, machine-readable reasons a request can fail, and the exception that carries one.

The floor of the package: it imports nothing of ours, so storage, the queue, the HTTP shim,
the backfill and the engine all fail with the same codes without importing each other.
The codes are part of the public contract (the queue results and the HTTP shim carry
them), so they are only ever added to, never renamed.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Raised by the engine while reading a document (the two of a missing or unreadable
    # file by storage too).
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
    """A request that ends in a failure result with `code`, wherever it is raised: the
    engine (`Engine.scan` turns it into `ScanResult.error`), storage, the queue's payload
    checks or the shim's body reader."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
