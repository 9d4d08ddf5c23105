"""The job envelope: the RQ job hash a producer wrote, checked before RQ acts on any of it.

RQ parses the id, the timeout and `data` while it prepares a job, and raises (taking the
worker process with it) on values it cannot use; it also inflates zlib `data` without a
limit. So every field RQ would act on is checked here first, on the raw bytes from Redis,
and each problem becomes a `JobRejected` with a stable error code. `QrQueue.dequeue_any`
(worker.queue.intake) turns that into a published failure, or a dead-letter entry when
the id itself cannot name a result.

Pure functions: no Redis here, so every rule is testable on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

from worker.errors import ErrorCode
from worker.queue.names import JOB_FUNCTION, JOB_ROUND_FIELD
from worker.rules import MAX_JOB_TIMEOUT_S, MIN_JOB_TIMEOUT_S, QUOTE_CHARS, quote

MAX_JOB_ID_CHARS = 128
# Room for RQ's own bookkeeping next to `data` (timestamps, a previous run's compressed
# traceback): the whole hash may be this much larger than the `data` limit.
HASH_OVERHEAD_BYTES = 65_536

_JOB_ID = re.compile(rb"[A-Za-z0-9_-]{1,%d}" % MAX_JOB_ID_CHARS)
_SECONDS = re.compile(rb"[0-9]{1,7}")

# RQ job options that would make a worker import and call other code (callbacks), send
# HTTP requests to hosts a producer names (webhooks), or schedule work and write keys on
# a producer's behalf (dependencies, repeats, rate limits, groups). Only jobs.scan runs,
# so a job asking for any of them is refused. RQ writes the callback names as "" when
# unset, so only non-empty values count.
REFUSED_FIELDS = (
    "success_callback_name",
    "failure_callback_name",
    "stopped_callback_name",
    "webhooks",
    "dependency_ids",
    "dependency_id",
    "repeats_left",
    "repeat_intervals",
    "rate_limit_key",
    "rate_limit_concurrency",
    "group_id",
)


class JobRejected(Exception):
    """The job cannot run: `code` and a one-line `message` for its failure result."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnusableJobId(JobRejected):
    """The id cannot name a result key: the job goes to the dead-letter stream."""


class RefusedJob(JobRejected):
    """The job asks for a function or an RQ option this service does not run."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.REFUSED_JOB, message)


class InvalidJob(JobRejected):
    """The job hash or its `data` is malformed."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_PAYLOAD, message)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A job hash that passed every check: RQ may prepare it."""

    job_id: str
    timeout: int | None
    # The JSON text of `data`, inflated: what the job hash's `data` means.
    data: bytes
    # args[0]: the payload, still to be validated by worker.queue.payloads.parse.
    payload: object


def job_id(raw: bytes) -> str:
    """The popped id as text, if it can name the job's keys; else UnusableJobId."""
    if not _JOB_ID.fullmatch(raw):
        raise UnusableJobId(
            ErrorCode.INVALID_PAYLOAD,
            f"the job id must be 1 to {MAX_JOB_ID_CHARS} letters, digits, '-' or '_'",
        )
    return raw.decode("ascii")


def quote_id(raw: bytes) -> str:
    """An id fit to log and store whatever it holds: ASCII, cut to QUOTE_CHARS."""
    text = ascii(raw.decode("utf-8", errors="backslashreplace"))
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def stored_size(data_bytes: int, hash_bytes: int | None, limit: int) -> None:
    """Sizes read before the hash itself, so an oversized job is never loaded."""
    if data_bytes > limit:
        raise InvalidJob(f"the job data is {data_bytes} bytes stored; the limit is {limit} bytes")
    if hash_bytes is not None and hash_bytes > limit + HASH_OVERHEAD_BYTES:
        raise InvalidJob(
            f"the job hash is {hash_bytes} bytes; the limit is {limit + HASH_OVERHEAD_BYTES} bytes"
        )


def inflate(raw: bytes, limit: int) -> bytes:
    """`data` as RQ reads it (zlib-inflated when it is a zlib stream, else as stored), never
    producing more than `limit` bytes: a zlib bomb stops at the limit, not in the OOM killer."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        return raw  # not zlib: RQ's own fallback, the plain text
    if len(out) > limit or inflater.unconsumed_tail:
        raise InvalidJob(f"the job data would inflate past the limit of {limit} bytes")
    if not inflater.eof:
        return raw  # a truncated stream: zlib.decompress fails, so RQ keeps the raw bytes
    return out


def check(fields: dict[bytes, bytes], job_id: str, limit: int) -> Envelope:
    """Every field RQ would act on, checked; the first problem raises JobRejected."""
    if not fields:
        raise InvalidJob(f"no job hash for {job_id!r}: nothing was enqueued under this id")
    for name in REFUSED_FIELDS:
        if fields.get(name.encode()):
            raise RefusedJob(f"RQ option {name!r} is not supported: only {JOB_FUNCTION} runs")
    timeout = _timeout(fields.get(b"timeout"))
    if b"data" not in fields:
        raise InvalidJob("the job hash has no 'data' field")
    raw = fields[b"data"]
    stored_size(len(raw), None, limit)
    data = inflate(raw, limit)
    return Envelope(job_id, timeout, data, _payload(data))


def _timeout(raw: bytes | None) -> int | None:
    if not raw:
        return None
    seconds = int(raw) if _SECONDS.fullmatch(raw) else None
    if seconds is None or not MIN_JOB_TIMEOUT_S <= seconds <= MAX_JOB_TIMEOUT_S:
        raise InvalidJob(
            f"'timeout' must be a whole number of seconds from {MIN_JOB_TIMEOUT_S} to "
            f"{MAX_JOB_TIMEOUT_S}, not {quote(raw.decode('utf-8', errors='backslashreplace'))}"
        )
    return seconds


def _payload(data: bytes) -> object:
    try:
        decoded: Any = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise InvalidJob("the job data is not JSON text (pickle is never read)") from None
    except RecursionError:
        raise InvalidJob("the job data is nested too deeply") from None
    if not isinstance(decoded, list) or len(decoded) != 4:
        raise InvalidJob("the job data must be a JSON list [function, instance, args, kwargs]")
    function, instance, args, kwargs = decoded
    if not isinstance(function, str):
        raise InvalidJob(f"the job function must be a string, not {quote(function)}")
    if function != JOB_FUNCTION:
        raise RefusedJob(
            f"job function {quote(function)} is not allowed; the only one is {JOB_FUNCTION!r}"
        )
    if instance is not None:
        raise InvalidJob(f"the job's instance must be null, not {quote(instance)}")
    if not isinstance(args, list) or len(args) != 1:
        raise InvalidJob(f"the job's args must be a list of exactly one payload, not {quote(args)}")
    if kwargs != {}:
        raise InvalidJob(f"the job's kwargs must be {{}}, not {quote(kwargs)}")
    return args[0]


def salvage_payload(fields: dict[bytes, bytes], limit: int) -> object:
    """The payload of a rejected job, when it can be read within the limits, so that its
    `reply_to`, `request_id` and `meta` can each be checked for the failure result.
    Never raises: None when there is nothing to salvage."""
    raw = fields.get(b"data")
    if not raw or len(raw) > limit:
        return None
    try:
        decoded = json.loads(inflate(raw, limit))
    except (JobRejected, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(decoded, list) and len(decoded) >= 3:
        args = decoded[2]
        if isinstance(args, list) and args:
            return args[0]
    return None


def delivery(created_at: str, data: bytes, rounds: int = 0) -> str:
    """One enqueue of a job: the same for every run of it, different when a producer
    reuses the id for a new job, and for each round after the job failed for good (a
    requeue from RQ's failed registry: `rounds`, the job hash's JOB_ROUND_FIELD).

    Built from what RQ keeps stable across runs: `created_at` as RQ formats it and the
    inflated `data` (RQ rewrites the stored bytes, zlib-compressed, when it requeues).
    """
    digest = hashlib.blake2b(digest_size=10)
    digest.update(created_at.encode())
    digest.update(b"\0")
    digest.update(data)
    _add_round(digest, rounds)
    return digest.hexdigest()


def raw_delivery(fields: dict[bytes, bytes]) -> str:
    """The delivery of a job disposed of before RQ could read it (run again only by a
    requeue from RQ's failed registry, which is its next round)."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(fields.get(b"created_at", b""))
    digest.update(b"\0")
    digest.update(fields.get(b"data", b""))
    _add_round(digest, round_of(fields.get(JOB_ROUND_FIELD.encode())))
    return digest.hexdigest()


def round_of(raw: bytes | str | None) -> int:
    """The job hash's round (JOB_ROUND_FIELD); 0 when absent or not a small number (only
    workers write it: anything else is treated as a first round)."""
    text = raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
    return int(text) if text and text.isascii() and text.isdigit() and len(text) <= 9 else 0


def _add_round(digest: Any, rounds: int) -> None:
    # Round 0 adds nothing: the tokens of jobs queued before rounds existed stay valid.
    if rounds:
        digest.update(b"\0round %d" % rounds)


@dataclass(frozen=True, slots=True)
class Stamp:
    """Which enqueue a job hash holds, byte for byte as stored: its `created_at` and a SHA-1
    of its `data`. A worker writes to a job hash only while it still holds the stamp the
    worker read (worker/queue/job_hash.lua checks it atomically): a producer that reuses the
    id writes a new `created_at` or new `data`, and its job is then left alone."""

    created_at: bytes
    data_sha1: str

    @classmethod
    def of(cls, created_at: bytes | str | None, data: bytes | str | None) -> Stamp | None:
        """The stamp of these stored fields; None when a field is missing (nothing to hold)."""
        if created_at is None or data is None:
            return None
        created = created_at.encode() if isinstance(created_at, str) else created_at
        return cls(created, cls.digest(data.encode() if isinstance(data, str) else data))

    @staticmethod
    def digest(data: bytes) -> str:
        """What job_hash.lua compares: redis.sha1hex of the stored bytes."""
        return hashlib.sha1(data, usedforsecurity=False).hexdigest()
