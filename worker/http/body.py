"""Reading a request's image: the raw body or one multipart file, bounded in size and time.

The size limit is enforced while the bytes arrive (and from Content-Length when the
client declares it), so an oversized upload is refused before it is buffered. The time
is bounded too: the whole body within QRW_HTTP_BODY_TIMEOUT, and, past the first second,
at least QRW_HTTP_MIN_BODY_RATE bytes a second on average, so a client trickling a body
is cut off with 408 long before the timeout when it sends next to nothing. Every byte
held is counted against the process's upload budget (`limits.Uploads`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from worker.engine.errors import ErrorCode, ScanFailed
from worker.http.limits import Holding

# Room for multipart boundaries and part headers around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024
# A connection's first second is not held against the minimum rate: TCP slow start and a
# client's own set-up would otherwise cut off honest uploads.
_RATE_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a body must arrive: a total time, and a least average rate (0: none)."""

    timeout_s: float
    min_rate: int

    def wait_s(self, received: int, elapsed: float) -> tuple[float, bool]:
        """Seconds the next bytes may take, and whether the rate (not the timeout) binds."""
        left = self.timeout_s - elapsed
        if self.min_rate > 0:
            by_rate = _RATE_GRACE_S + received / self.min_rate - elapsed
            if by_rate < left:
                return max(0.0, by_rate), True
        return max(0.0, left), False

    def failure(self, received: int, declared: str, elapsed: float, by_rate: bool) -> ScanFailed:
        of = f" of {declared}" if declared else ""
        if by_rate:
            message = (
                f"the request body arrived slower than QRW_HTTP_MIN_BODY_RATE={self.min_rate} "
                f"bytes/s ({received}{of} bytes in {elapsed:.1f} s)"
            )
        else:
            message = (
                f"the request body did not arrive within QRW_HTTP_BODY_TIMEOUT="
                f"{self.timeout_s:g} s ({received}{of} bytes)"
            )
        return ScanFailed(ErrorCode.REQUEST_TIMEOUT, message)


class ClientClosed(ClientDisconnect):
    """The client went away before its body was in."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the client closed the connection after {received} bytes")
        self.received = received


async def read_image(request: Request, max_bytes: int, pace: Pace, holding: Holding) -> bytes:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        raw = await _read_limited(
            request, max_bytes + _MULTIPART_OVERHEAD, max_bytes, pace, holding
        )
        return await _first_file(request, raw, max_bytes)
    return await _read_limited(request, max_bytes, max_bytes, pace, holding)


async def _read_limited(
    request: Request, limit: int, reported: int, pace: Pace, holding: Holding
) -> bytes:
    declared = request.headers.get("content-length", "")
    # ASCII digits only: h11 has checked the header, but isdigit() alone would pass "²".
    if declared.isascii() and declared.isdigit():
        if int(declared) > limit:
            raise _too_large(int(declared), reported)
        holding.check(int(declared))
    else:
        declared = ""
    chunks: list[bytes] = []
    size = 0
    started = time.monotonic()
    while True:
        wait, by_rate = pace.wait_s(size, time.monotonic() - started)
        message: Message | None = None
        with anyio.move_on_after(wait):
            message = await request.receive()
        if message is None:
            raise pace.failure(size, declared, time.monotonic() - started, by_rate)
        if message["type"] == "http.disconnect":
            raise ClientClosed(size)
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(size, reported)
            holding.add(len(chunk))
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _first_file(request: Request, raw: bytes, max_bytes: int) -> bytes:
    async def replay() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except Exception as exc:  # the parser's errors differ by version; all mean "malformed"
        raise ScanFailed(ErrorCode.INVALID_REQUEST, f"malformed multipart body: {exc}") from exc
    try:
        upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise ScanFailed(ErrorCode.INVALID_REQUEST, "the multipart body holds no file part")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


def _too_large(size: int, limit: int) -> ScanFailed:
    return ScanFailed(
        ErrorCode.IMAGE_TOO_LARGE,
        f"the upload is over {limit} bytes (at least {size}); the limit is QRW_MAX_BYTES",
    )
