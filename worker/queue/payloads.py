"""The job payload (docs/protocol.md, Payload): validated into a typed request before
anything is fetched. The request fields follow worker.rules, as they do at every edge."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from worker import rules
from worker.errors import ErrorCode, ScanFailed
from worker.queue.names import REPLY_PREFIX

MAX_BATCH = 100
# Longer than any S3 key (1024 bytes) or Linux path (4096 bytes) a reference can name.
MAX_REFERENCE_CHARS = 4096
MAX_REPLY_TO_CHARS = 200
# What follows the prefix: a UUID or any other name of these characters.
_REPLY_NAME = re.compile(r"[A-Za-z0-9:_.\-]+")
# A result kept for at least a minute: long enough for a collector to read it late, and its
# delivery token (which lives as long) outlasts the quick reruns after a worker loss.
MIN_RESULT_TTL_S = 60
MAX_RESULT_TTL_S = rules.MAX_RESULT_TTL_S
_KNOWN = frozenset(
    {
        "image",
        "images",
        "request_id",
        "want",
        "deadline_ms",
        "reply_to",
        "meta",
        "result_ttl",
        "stream",
    }
)


@dataclass(frozen=True, slots=True)
class ScanRequest:
    images: tuple[str, ...]
    batch: bool
    request_id: str | None = None
    want: rules.Want | None = None
    deadline_ms: int | None = None
    reply_to: str | None = None
    meta: Any = None
    # How the result is delivered, never echoed in it: None keeps QRW_RESULT_TTL.
    result_ttl: int | None = None
    stream: bool = True


@dataclass(frozen=True, slots=True)
class Echo:
    """What a failed job's result may carry back from its payload, and how it is delivered:
    each field only if it passes its own rule, so a rejected 20 MB `meta` is never stored
    or pushed, and a backfill job that fails still stays out of the results stream."""

    request_id: str | None = None
    meta: Any = None
    reply_to: str | None = None
    result_ttl: int | None = None
    stream: bool = True


def _invalid(message: str) -> ScanFailed:
    return ScanFailed(ErrorCode.INVALID_PAYLOAD, message)


def reply_to(value: object) -> str | None:
    """A reply list: a key under REPLY_PREFIX, so a payload never names another
    application's keys (nor RQ's, nor our own results)."""
    if value is None:
        return None
    if (
        isinstance(value, str)
        and value.startswith(REPLY_PREFIX)
        and len(value) <= MAX_REPLY_TO_CHARS
        and _REPLY_NAME.fullmatch(value, len(REPLY_PREFIX))
    ):
        return value
    raise rules.RuleViolation(
        f"'reply_to' must be a list name starting with {REPLY_PREFIX!r} followed by letters, "
        f"digits or :_.- (at most {MAX_REPLY_TO_CHARS} characters), not {rules.quote(value)}"
    )


def result_ttl(value: object) -> int | None:
    """Seconds the result and its delivery token stay in Redis, instead of QRW_RESULT_TTL:
    a producer that drains its reply list at once (a backfill) need not keep a day of
    results. The reply list keeps QRW_RESULT_TTL."""
    if value is None:
        return None
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and MIN_RESULT_TTL_S <= value <= MAX_RESULT_TTL_S
    ):
        return value
    raise rules.RuleViolation(
        f"'result_ttl' must be a whole number of seconds from {MIN_RESULT_TTL_S} to "
        f"{MAX_RESULT_TTL_S}, not {rules.quote(value)}"
    )


def stream(value: object) -> bool:
    """False keeps the result out of the capped results stream: a producer collecting from
    its own reply list (a backfill) neither floods the stream's readers nor loses results
    to its cap."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    raise rules.RuleViolation(f"'stream' must be true or false, not {rules.quote(value)}")


def echo(payload: object) -> Echo:
    """The fields of a payload (valid or not) that may be echoed in its failure result,
    and its delivery fields: each one that passes its rule, the default otherwise."""
    if not isinstance(payload, dict):
        return Echo()
    found: dict[str, Any] = {}
    for name, rule in (
        ("request_id", rules.request_id),
        ("meta", rules.meta),
        ("reply_to", reply_to),
        ("result_ttl", result_ttl),
        ("stream", stream),
    ):
        with contextlib.suppress(rules.RuleViolation):  # broken: the field's default
            found[name] = rule(payload.get(name))
    return Echo(**found)


def parse(payload: object) -> ScanRequest:
    if not isinstance(payload, dict):
        raise _invalid(f"the payload must be a JSON object, got {type(payload).__name__}")
    unknown = set(payload) - _KNOWN
    if unknown:
        listed = ", ".join(sorted(rules.quote(name) for name in unknown)[:10])
        raise _invalid(f"unknown payload fields: {listed}")
    if ("image" in payload) == ("images" in payload):
        raise _invalid("the payload needs exactly one of 'image' or 'images'")
    if "image" in payload:
        images: tuple[str, ...] = (payload["image"],)
        batch = False
    else:
        listed_images = payload["images"]
        if not isinstance(listed_images, list) or not 1 <= len(listed_images) <= MAX_BATCH:
            raise _invalid(f"'images' must be a list of 1 to {MAX_BATCH} references")
        images, batch = tuple(listed_images), True
    for ref in images:
        _reference(ref)
    try:
        return ScanRequest(
            images=images,
            batch=batch,
            request_id=rules.request_id(payload.get("request_id")),
            want=None if payload.get("want") is None else rules.want(payload["want"]),
            deadline_ms=(
                None
                if payload.get("deadline_ms") is None
                else rules.deadline_ms(payload["deadline_ms"])
            ),
            reply_to=reply_to(payload.get("reply_to")),
            meta=rules.meta(payload.get("meta")),
            result_ttl=result_ttl(payload.get("result_ttl")),
            stream=stream(payload.get("stream")),
        )
    except rules.RuleViolation as violation:
        raise _invalid(str(violation)) from None


def _reference(ref: object) -> None:
    if not isinstance(ref, str) or not ref:
        raise _invalid(f"an image reference must be a non-empty string, not {rules.quote(ref)}")
    if len(ref) > MAX_REFERENCE_CHARS:
        raise _invalid(
            f"an image reference may have at most {MAX_REFERENCE_CHARS} characters, "
            f"not {len(ref)}: {rules.quote(ref)}"
        )
    if not rules.text_ok(ref):
        raise _invalid(f"an image reference must be valid Unicode text, not {rules.quote(ref)}")
