"""The engine's failures: the codes and `ScanFailed` live in `worker.errors` (storage, the
queue and the shim fail with them too, without importing the engine) and are re-exported
here, so the engine's own modules import them from beside them."""

from __future__ import annotations

from worker.errors import ErrorCode, ScanFailed

__all__ = ["DeadlineReached", "ErrorCode", "ScanFailed"]


class DeadlineReached(Exception):
    """Raised by the decoding of a document when the scan's deadline passes between two
    pages or frames; the engine stops the cascade there and keeps the codes already read."""
