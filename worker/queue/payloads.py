"""The job payload: validated into a typed request before anything is fetched."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from worker.engine import Want
from worker.engine.errors import ErrorCode, ScanFailed

MAX_BATCH = 100
MAX_META_BYTES = 16_384
_REPLY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.\-]{0,199}$")
_KNOWN = frozenset({"image", "images", "request_id", "want", "deadline_ms", "reply_to", "meta"})


@dataclass(frozen=True, slots=True)
class ScanRequest:
    images: tuple[str, ...]
    batch: bool
    request_id: str | None = None
    want: Want | None = None
    deadline_ms: int | None = None
    reply_to: str | None = None
    meta: Any = None


def _invalid(message: str) -> ScanFailed:
    return ScanFailed(ErrorCode.INVALID_PAYLOAD, message)


def peek_reply_to(payload: object) -> str | None:
    """The reply list of a payload too broken to parse, if it names a safe one."""
    if isinstance(payload, dict):
        reply_to = payload.get("reply_to")
        if isinstance(reply_to, str) and _reply_name_ok(reply_to):
            return reply_to
    return None


def _reply_name_ok(name: str) -> bool:
    # A reply list must never alias RQ's or our own keys: an RPUSH onto rq:queue:qr would
    # smuggle a job id into the queue.
    if not _REPLY_NAME.match(name):
        return False
    return not (
        name.startswith("rq:") or (name.startswith("qrw:") and not name.startswith("qrw:reply:"))
    )


def parse(payload: object) -> ScanRequest:
    if not isinstance(payload, dict):
        raise _invalid(f"the payload must be a JSON object, got {type(payload).__name__}")
    unknown = set(payload) - _KNOWN
    if unknown:
        raise _invalid(f"unknown payload fields: {', '.join(sorted(map(str, unknown)))}")
    if ("image" in payload) == ("images" in payload):
        raise _invalid("the payload needs exactly one of 'image' or 'images'")
    if "image" in payload:
        images: tuple[str, ...] = (payload["image"],)
        batch = False
    else:
        listed = payload["images"]
        if not isinstance(listed, list) or not listed or len(listed) > MAX_BATCH:
            raise _invalid(f"'images' must be a list of 1 to {MAX_BATCH} references")
        images, batch = tuple(listed), True
    for ref in images:
        if not isinstance(ref, str) or not ref:
            raise _invalid(f"an image reference must be a non-empty string, got {ref!r}")

    request_id = payload.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 200):
        raise _invalid("'request_id' must be a string of at most 200 characters")
    want = payload.get("want")
    if want is not None and want not in ("first", "all"):
        raise _invalid("'want' must be 'first' or 'all'")
    deadline_ms = payload.get("deadline_ms")
    if deadline_ms is not None and (
        isinstance(deadline_ms, bool)
        or not isinstance(deadline_ms, int)
        or not 0 < deadline_ms <= 600_000
    ):
        raise _invalid("'deadline_ms' must be a whole number from 1 to 600000")
    reply_to = payload.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, str) or not _reply_name_ok(reply_to)):
        raise _invalid(
            "'reply_to' must be a Redis key name of letters, digits and :_.- (at most 200), "
            "not under rq: or qrw: (qrw:reply: is fine)"
        )
    meta = payload.get("meta")
    if len(json.dumps(meta)) > MAX_META_BYTES:
        raise _invalid(f"'meta' must serialise to at most {MAX_META_BYTES} bytes")
    return ScanRequest(images, batch, request_id, want, deadline_ms, reply_to, meta)
