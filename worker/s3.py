"""S3, once: the client, what counts as a failure worth retrying, the retrying loop, and a
streamed object body as a file.

Used by everything that talks to S3: the workers' fetch (worker.storage), what a backfill
lists and reads (worker.backfill.sources) and what it writes (worker.backfill.output).

What botocore's retry modes cover, and why the loop is still ours
-----------------------------------------------------------------
botocore's `standard` mode (`adaptive` is the same plus a client-side rate limiter) retries
a request up to `max_attempts` / `total_max_attempts` times on: connection errors and
HTTP-client errors (`ConnectionError`, `HTTPClientError`: refused, reset, timed out), HTTP
500/502/503/504, an unmodelled 429, the transient codes `RequestTimeout`,
`RequestTimeoutException`, `PriorRequestNotComplete`, and a list of throttling codes kept in
step with the other AWS SDKs (`Throttling`, `ThrottlingException`, `SlowDown`,
`TooManyRequestsException`, `RequestLimitExceeded`, ...). It waits `rand(0, 1) * min(base *
2**i, 20 s)` (base 1 s for throttling, 50 ms otherwise), honours `x-amz-retry-after`, and stops
retrying altogether once a client-wide quota of failed retries is spent.

What it does not do, and we need:
- a deadline: its waits happen inside the call, with nothing a job's deadline can bound;
- the body: a GetObject's body is read after the call has returned, so a connection reset
  half-way through an object (or a manifest being streamed) is never retried by botocore;
  a retrying loop around the read is needed in any case, and a second loop inside it
  (botocore's) would multiply the requests and split one attempt count between two
  settings;
- our outcomes: a job's `storage_unavailable` / `not_found` / `read_failed`, a backfill's
  one-line error naming what failed how many times.

So botocore's own retries are off (`total_max_attempts=1`) and `call` is the one loop, with
one attempt count per caller, the project's one backoff (worker.backoff) and an optional
deadline. What botocore knows best, which error codes say "try again", is asked of its
standard-mode checkers (`is_transient`), not copied; to them we add what the three copies of
this module agreed on before: any status of 500 or more or 429 (with or without a code),
`InternalError`, `ServiceUnavailable`, `RequestTimeTooSkewed`, and every error botocore
raises short of a service's answer (BotoCoreError: a connection refused or reset, a timeout,
a body cut short, and credentials it could not get, which an instance-metadata hiccup
causes as well).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import structlog

from worker.backoff import backoff_s

log = structlog.get_logger("s3")

T = TypeVar("T")

# Transient too, beyond botocore's standard-mode codes: S3's own 5xx codes (also sent by
# gateways with other statuses) and a clock skew, which passes once the clock is corrected.
_MORE_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "RequestTimeTooSkewed"})
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


@cache
def client() -> Any:
    """One client per process: boto3 reads AWS_ENDPOINT_URL, AWS_REGION and credentials (so
    AWS S3, MinIO, Ceph and R2 all work). Its own retries are off: `call` retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=4,
    )
    return boto3.session.Session().client("s3", config=config)


@dataclass(frozen=True, slots=True)
class Retry:
    """How often, and how patiently, a transient S3 failure is retried."""

    attempts: int
    base_s: float  # the first wait (jittered: half to one and a half of it)
    cap_s: float  # the longest

    def wait_s(self, failures: int) -> float:
        return backoff_s(failures - 1, first_s=self.base_s, cap_s=self.cap_s)

    def pause(self, failures: int) -> None:
        time.sleep(self.wait_s(failures))


class BodyBroken(Exception):
    """Reading an object's body failed half-way (reset, timeout, cut short): read it again.

    Not an OSError, so that a reader can tell it from what the bytes themselves are (a gzip
    stream that is not one raises OSError)."""


class GaveUp(Exception):
    """Transient failures outlasted the attempts, or the deadline, of a `call`."""

    def __init__(self, tries: int, last: BaseException, *, by_deadline: bool) -> None:
        self.tries, self.last, self.by_deadline = tries, last, by_deadline
        ended = " before its deadline" if by_deadline else ""
        super().__init__(f"failed {tries} times{ended}; the last: {reason(last)}")


def call(
    what: str,
    request: Callable[[], T],
    retry: Retry,
    *,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`request()`, with transient failures (`is_transient`) retried with jittered backoff.

    Anything else is raised as it is. Raises GaveUp once `retry.attempts` tries have failed
    transiently, or sooner when the next try would start after `deadline` (time.monotonic()).
    """
    for attempt in range(1, retry.attempts + 1):
        try:
            return request()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == retry.attempts:
                raise GaveUp(attempt, exc, by_deadline=False) from exc
            wait = retry.wait_s(attempt)
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise GaveUp(attempt, exc, by_deadline=True) from exc
            log.warning("s3_retry", what=what, attempt=attempt, error=reason(exc))
            sleep(wait)
    raise AssertionError("unreachable: a Retry makes at least one attempt")


class Failed(Exception):
    """A `checked` call that failed for good: S3 refused it, or transient failures outlasted
    its tries; the message says which, in one line."""


def checked(what: str, request: Callable[[], T], retry: Retry) -> T:
    """`call`, with every failure S3 gave raised as Failed("<what>: <reason>")."""
    from botocore.exceptions import ClientError

    try:
        return call(what, request, retry)
    except GaveUp as exc:
        raise Failed(f"{what}: {exc}") from None
    except ClientError as exc:
        raise Failed(f"{what}: {reason(exc)}") from None


def is_transient(exc: BaseException) -> bool:
    """Whether S3 failing with `exc` may well succeed if asked again."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = status_code(exc)
        return code in _MORE_TRANSIENT_CODES or status >= 500 or status == 429 or _standard(exc)
    # The network, not the request: refused, reset, timed out, a body cut short.
    return isinstance(exc, BotoCoreError | HTTPError | BodyBroken | ConnectionError | TimeoutError)


def _standard(exc: Any) -> bool:
    from botocore.retries.standard import RetryContext

    # Only the parsed error: the statuses are decided above, whatever the code.
    context = RetryContext(attempt_number=1, parsed_response=exc.response)
    return any(checker.is_retryable(context) for checker in _standard_checkers())


@cache
def _standard_checkers() -> tuple[Any, ...]:
    # Built on first use: botocore is imported lazily, as everywhere in the runtime.
    from botocore.retries.standard import ThrottledRetryableChecker, TransientRetryableChecker

    return (ThrottledRetryableChecker(), TransientRetryableChecker())


def is_missing(exc: BaseException) -> bool:
    """Whether `exc` says the bucket or the object does not exist."""
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and (
        error_code(exc) in _MISSING_CODES or status_code(exc) == 404
    )


def error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def status_code(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def reason(exc: BaseException) -> str:
    """One line saying how S3 failed: `SlowDown: Please reduce your request rate`,
    `EndpointConnectionError: Could not connect to ...`."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        message = str(exc.response.get("Error", {}).get("Message", ""))
        return f"{error_code(exc) or status_code(exc)}: {message}".rstrip(": ")
    if isinstance(exc, GaveUp | BodyBroken):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Body(io.RawIOBase):
    """botocore's streaming body as a raw stream (for io.BufferedReader, gzip); a read that
    fails in the transport raises BodyBroken."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise BodyBroken(reason(exc)) from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            except Exception as exc:
                # A connection that broke is closed already: nothing is left to release.
                log.debug("s3_body_close_failed", error=reason(exc))
        super().close()
