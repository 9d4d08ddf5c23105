"""Writing a finished job's result where the producer collects it (docs/protocol.md, Result).

One Lua script (publish.lua) stores, streams and pushes the result all or nothing, once
per enqueue of the job (the payload may shorten how long the result is kept, and keep it
out of the stream: `result_ttl`, `stream`). A `Publisher` is built once per worker process,
into the job context; it registers the script once and runs it by its digest, loading it
again when Redis has forgotten it (a restart, SCRIPT FLUSH).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis
import structlog

from worker.backoff import backoff_s
from worker.queue import names
from worker.settings import Settings

log = structlog.get_logger("worker.replies")

_SCRIPT = Path(__file__).with_name("publish.lua").read_text()
# Redis restarting, failing over or full: about 7.5 s of backed-off tries before the error
# reaches RQ, which then runs the job again (and the delivery token keeps it to one result).
_ATTEMPTS = 5
# Redis answering but refusing writes: full (`maxmemory` under `noeviction`: OOM, or the
# EXECABORT of a transaction holding a refused write) or a replica after a failover
# (READONLY). The command did nothing; the same command can succeed once Redis has room.
WRITE_REFUSED: tuple[type[redis.RedisError], ...] = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ExecAbortError,
    redis.exceptions.ReadOnlyError,
)
# Errors a retry of the same Redis command may outlast.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, *WRITE_REFUSED)


# Longest wait between two tries of a write that a full Redis refused.
WRITE_BACKOFF_CAP_S = 5.0


def wait_for_writes(what: str, exc: BaseException, attempt: int, **fields: Any) -> None:
    """A write during `what` failed in a way a later try may outlast (TRANSIENT): log it
    (the first try of an outage, then every tenth), then back off before try `attempt + 2`.
    The event says which outage: `redis_write_refused` (full, or a replica: WRITE_REFUSED)
    or `redis_unreachable` (the connection lost or timed out)."""
    if attempt % 10 == 0:
        event = "redis_write_refused" if isinstance(exc, WRITE_REFUSED) else "redis_unreachable"
        log.warning(event, during=what, attempt=attempt + 1, error=str(exc)[:300], **fields)
    time.sleep(backoff_s(attempt, cap_s=WRITE_BACKOFF_CAP_S))


# A document nested deeper than this is a bug upstream; its depths are cut when scrubbed.
_MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


class ReplyError(StrEnum):
    """Why the result could not be pushed to `reply_to` (it is still stored and streamed,
    with `reply_error` saying this)."""

    OUTSIDE_NAMESPACE = "reply_outside_namespace"
    NOT_A_LIST = "reply_not_a_list"


class ResultNotEncodable(ValueError):
    """The result document cannot be written as JSON even after scrubbing: a bug upstream."""


@dataclass(frozen=True, slots=True)
class Published:
    """What one publish did. `delivered` is False when this enqueue's result had already
    been delivered (the job ran again after its worker died): nothing was written."""

    delivered: bool
    reply_error: ReplyError | None = None


class Publisher:
    """Publishes results for one worker process. `delivery` identifies one enqueue of a
    job: the same for every run of that job, different when a producer reuses the id for a
    new job. Pass the same token for every publish of one enqueue (success or failure)."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self._script = connection.register_script(_SCRIPT)

    def publish(
        self,
        document: dict[str, Any],
        reply_to: str | None,
        delivery: str | None = None,
        *,
        result_ttl: int | None = None,
        stream: bool = True,
    ) -> bool:
        """Deliver the result; False if this enqueue's result was already delivered."""
        return self.deliver(
            document, reply_to, delivery, result_ttl=result_ttl, stream=stream
        ).delivered

    def deliver(
        self,
        document: dict[str, Any],
        reply_to: str | None,
        delivery: str | None = None,
        *,
        result_ttl: int | None = None,
        stream: bool = True,
    ) -> Published:
        """`result_ttl` (the payload's, already checked) replaces QRW_RESULT_TTL for the
        result key and its delivery token; `stream=False` leaves the results stream out."""
        job_id = str(document["job_id"])
        keys = [
            names.result_key(job_id),
            names.RESULTS_STREAM,
            names.delivery_key(job_id),
            *([reply_to] if reply_to else []),
        ]
        args = [
            encode(document),
            result_ttl or self.settings.result_ttl,
            self.settings.results_stream_maxlen,
            job_id,
            "1" if document.get("ok") else "0",
            delivery or "",
            names.REPLY_PREFIX,
            self.settings.result_ttl,
            "1" if stream else "0",
        ]
        delivered = False
        for attempt in range(_ATTEMPTS):
            try:
                (status, reply_error), held = self._run(keys, args)
                # A publish again after one a replica did not confirm writes nothing when
                # the first reached it after all: the first one's delivery counts.
                delivered |= bool(status)
                if held:
                    break
                log.warning("result_not_replicated", job_id=job_id, attempt=attempt + 1)
            except TRANSIENT as exc:
                if attempt == _ATTEMPTS - 1:
                    raise
                log.warning("publish_retry", job_id=job_id, attempt=attempt + 1, error=repr(exc))
            if attempt < _ATTEMPTS - 1:
                time.sleep(backoff_s(attempt))
        published = Published(
            delivered=delivered,
            reply_error=ReplyError(reply_error.decode()) if reply_error else None,
        )
        if published.reply_error:
            log.error(
                "reply_not_delivered",
                job_id=job_id,
                reply_to=reply_to[:200] if reply_to else None,
                reason=published.reply_error.value,
            )
        return published

    def _run(self, keys: list[str], args: list[Any]) -> tuple[Any, bool]:
        """The script's reply, and whether QRW_REDIS_WAIT_REPLICAS replicas hold what it
        wrote. The WAIT goes in one pipeline with the script: it counts the writes of its
        own connection. A publish no replica holds would be lost with its master in a
        failover, while RQ's bookkeeping after it, written to the promoted replica, said
        the job was done: it is published again instead (docs/protocol.md, Replication)."""
        wanted = self.settings.redis_wait_replicas
        if not wanted:
            return self._script(keys=keys, args=args), True
        with self.connection.pipeline(transaction=False) as pipe:
            self._script(keys=keys, args=args, client=pipe)
            pipe.wait(wanted, self.settings.redis_wait_ms)
            reply, replicas = pipe.execute()
        return reply, int(replicas) >= wanted


def encode(document: dict[str, Any]) -> bytes:
    """The document as strict UTF-8 JSON, whatever it holds.

    Text UTF-8 cannot carry (a lone surrogate) becomes U+FFFD, NaN and infinities become
    null, anything not JSON becomes its str(): a result is always delivered, and readable
    by strict parsers (serde_json), even when a bug upstream let such a value through.
    """
    try:
        return _dumps(document).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        log.warning("result_scrubbed", job_id=str(document.get("job_id")), error=repr(exc)[:300])
    try:
        return _dumps(_scrub(document, 0)).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ResultNotEncodable(f"the result cannot be encoded as JSON: {exc!r}"[:500]) from exc


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _scrub(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_scrub(str(k), depth + 1): _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, depth + 1) for item in value]
    return _SURROGATE.sub("\ufffd", str(value))
