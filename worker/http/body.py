"""Reading a request's image: the raw body or one multipart file, bounded in size and time.

The size limit is enforced while the bytes arrive (and from Content-Length when the
client declares it), so an oversized upload is refused before it is buffered. The time
is bounded too: the whole body within QRW_HTTP_BODY_TIMEOUT, and at least
QRW_HTTP_MIN_BODY_RATE bytes a second both on average since the first second (a trickle
from the start is cut within seconds) and over the last QRW_HTTP_BODY_RATE_WINDOW
seconds. The average alone let an upload that sends most of its body at once and then
stalls keep a high rate for minutes, while it held its bytes against the process's upload
budget (`limits.Uploads`); the window cuts it with 408 within 1 1/8 windows of its stall
(the window is tracked in eighths, below).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from worker.errors import ErrorCode, ScanFailed
from worker.http.limits import Holding

# Room for multipart boundaries and part headers around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024
# A connection's first second is not held against the average rate: TCP slow start and a
# client's own set-up would otherwise cut off honest uploads.
_RATE_GRACE_S = 1.0
# Arrivals closer together than this share of the window count as one: a body's bookkeeping
# stays a few marks however small the chunks, and a mark's time is its latest chunk, so the
# cut comes at most an eighth of a window late, never early.
_MARKS_PER_WINDOW = 8


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a body must arrive: a total time, and a least rate (0: none), on average
    and over each window."""

    timeout_s: float
    min_rate: int
    window_s: float

    def start(self, now: float) -> Arrival:
        return Arrival(self, now)


class Limit(Enum):
    """Which bound a body's next bytes must arrive within."""

    TIMEOUT = "timeout"
    AVERAGE = "average"
    WINDOW = "window"


@dataclass(slots=True)
class _Mark:
    """By `last`, `total` bytes of the body had arrived."""

    opened: float
    last: float
    total: int


class Arrival:
    """One body's progress against its Pace."""

    def __init__(self, pace: Pace, now: float) -> None:
        self.pace = pace
        self.started = now
        self.received = 0
        # Bytes each window must bring; the body's first window starts with the request.
        self._need = max(1, math.ceil(pace.min_rate * pace.window_s))
        self._marks = deque([_Mark(now, now, 0)])

    def add(self, size: int, now: float) -> None:
        self.received += size
        latest = self._marks[-1]
        if now - latest.opened < self.pace.window_s / _MARKS_PER_WINDOW:
            latest.last, latest.total = now, self.received
        else:
            self._marks.append(_Mark(now, now, self.received))

    def wait_s(self, now: float) -> tuple[float, Limit]:
        """Seconds the next bytes may take, and the bound that sets it."""
        bounds = [(self.started + self.pace.timeout_s, Limit.TIMEOUT)]
        if self.pace.min_rate > 0:
            average = self.started + _RATE_GRACE_S + self.received / self.pace.min_rate
            bounds.append((average, Limit.AVERAGE))
            bounds.append((self._window_start() + self.pace.window_s, Limit.WINDOW))
        until, limit = min(bounds, key=lambda bound: bound[0])
        return max(0.0, until - now), limit

    def _window_start(self) -> float:
        """When the last `need` bytes began to arrive (the request's start if fewer came):
        the window must not close before more bytes do."""
        floor = self.received - self._need
        # The newest mark holds every byte received, more than `floor`: it always stays.
        while len(self._marks) > 1 and self._marks[0].total <= floor:
            self._marks.popleft()
        return self._marks[0].last

    def failure(self, declared: str, now: float, limit: Limit) -> ScanFailed:
        of = f" of {declared}" if declared else ""
        elapsed = now - self.started
        over = (
            "on average"
            if limit is Limit.AVERAGE
            else f"over the last QRW_HTTP_BODY_RATE_WINDOW={self.pace.window_s:g} s"
        )
        if limit is not Limit.TIMEOUT:
            message = (
                f"the request body arrived slower than QRW_HTTP_MIN_BODY_RATE="
                f"{self.pace.min_rate} bytes/s {over} ({self.received}{of} bytes in "
                f"{elapsed:.1f} s)"
            )
        else:
            message = (
                f"the request body did not arrive within QRW_HTTP_BODY_TIMEOUT="
                f"{self.pace.timeout_s:g} s ({self.received}{of} bytes)"
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
    arrival = pace.start(time.monotonic())
    while True:
        wait, bound = arrival.wait_s(time.monotonic())
        message: Message | None = None
        with anyio.move_on_after(wait):
            message = await request.receive()
        if message is None:
            raise arrival.failure(declared, time.monotonic(), bound)
        if message["type"] == "http.disconnect":
            raise ClientClosed(arrival.received)
        chunk = message.get("body", b"")
        if chunk:
            if arrival.received + len(chunk) > limit:
                raise _too_large(arrival.received + len(chunk), reported)
            holding.add(len(chunk))
            arrival.add(len(chunk), time.monotonic())
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
