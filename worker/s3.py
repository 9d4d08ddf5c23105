"""S3, once: the client, every request the project makes of it, what counts as a failure
worth retrying, the retrying loop, and a streamed object body as a file.

Used by everything that talks to S3: the workers' fetch (worker.storage), what a backfill
lists and reads (worker.backfill.sources) and what it writes (worker.backfill.output). No
other module imports boto3 or botocore (tests/test_layering.py): each request below is one
attempt, which the caller wraps in `call` or `checked` with its own attempts, and S3's
answers come back as plain values or as this module's exceptions (`Refused`, `Missing`,
`TooLarge`, `BodyBroken`), never as botocore's.

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

import contextlib
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
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
    try:
        return call(what, request, retry)
    except GaveUp as exc:
        raise Failed(f"{what}: {exc}") from None
    except Refused as exc:
        raise Failed(f"{what}: {exc}") from None


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

    if isinstance(exc, Missing):
        return True
    return isinstance(exc, ClientError) and (
        error_code(exc) in _MISSING_CODES or status_code(exc) == 404
    )


def error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def status_code(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def error_message(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def reason(exc: BaseException) -> str:
    """One line saying how S3 failed: `SlowDown: Please reduce your request rate`,
    `EndpointConnectionError: Could not connect to ...`."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return f"{error_code(exc) or status_code(exc)}: {error_message(exc)}".rstrip(": ")
    if isinstance(exc, GaveUp | BodyBroken | Refused):
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


def stream_errors() -> tuple[type[BaseException], ...]:
    """What reading a body (or a gzip stream over one) raises when the connection, not the
    data, failed half-way: worth opening it again from where it broke off."""
    import zlib

    from botocore.exceptions import BotoCoreError
    from urllib3.exceptions import HTTPError

    # EOFError and zlib.error: a gzip stream cut short by a dropped connection.
    return (BodyBroken, BotoCoreError, HTTPError, OSError, EOFError, zlib.error)


# ---------------------------------------------------------------------------------------
# The requests. Each is one attempt: transient failures are raised as botocore raised them,
# for `call` to judge; S3's other answers as Refused (Missing for a bucket or an object that
# does not exist).


class Refused(Exception):
    """S3 answered a request with an error that asking again would not change."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}".rstrip(": "))


class Missing(Refused):
    """The bucket or the object does not exist."""


class TooLarge(Exception):
    """An object over the size its reader allows; `size` is what S3 said or what arrived."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(f"{size} bytes or more")


@contextlib.contextmanager
def _asking() -> Iterator[None]:
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if is_transient(exc):
            raise
        kind = Missing if is_missing(exc) else Refused
        raise kind(error_code(exc) or str(status_code(exc)), error_message(exc)) from exc


def read(bucket: str, key: str, limit: int) -> bytes:
    """One GetObject, its body read whole: TooLarge past `limit` bytes (never holding more
    than `limit` + 1 of them), BodyBroken for a body that arrived short."""
    with _asking():
        response = client().get_object(Bucket=bucket, Key=key)
    size = int(response.get("ContentLength") or 0)
    body = response["Body"]
    try:
        if size > limit:
            raise TooLarge(size)
        # One byte past the limit: a server that lies about the length is caught without
        # ever holding more than the limit in memory.
        data = body.read(limit + 1)
    finally:
        body.close()
    if len(data) > limit:
        raise TooLarge(len(data))
    # A connection closed cleanly half-way ends the read short without an error (botocore
    # checks the length only on a read to the end): a truncated object would pass as whole.
    if len(data) < size:
        raise BodyBroken(f"s3://{bucket}/{key}: {len(data)} of its {size} bytes arrived")
    return data


def open_body(bucket: str, key: str, *, offset: int = 0, if_match: str = "") -> tuple[Body, str]:
    """One GetObject from byte `offset` (of the version whose ETag is `if_match`, when
    given), its body as a stream, and the object's ETag. Refused with code InvalidRange
    where `offset` is the object's end."""
    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if offset:
        request["Range"] = f"bytes={offset}-"
    if if_match:
        request["IfMatch"] = if_match
    with _asking():
        response = client().get_object(**request)
    return Body(response["Body"]), str(response.get("ETag") or "")


def head(bucket: str, key: str) -> None:
    """One HeadObject: returns when the object exists and may be read."""
    with _asking():
        client().head_object(Bucket=bucket, Key=key)


@dataclass(frozen=True, slots=True)
class Listed:
    """An object as a listing shows it."""

    key: str
    size: int  # -1 where the listing does not say
    etag: str  # without its quotes
    last_modified: datetime | None


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of a listing, and the token for the next (None after the last)."""

    objects: list[Listed]
    next_token: str | None


def list_page(
    bucket: str,
    prefix: str,
    *,
    limit: int = 1000,
    start_after: str = "",
    token: str | None = None,
    folders: bool = True,
) -> Listing:
    """One ListObjectsV2 page of the keys under `prefix`, in S3's order (UTF-8 bytes).
    `folders=False` lists only the keys directly under it (a "/" delimiter)."""
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": limit}
    if start_after:
        request["StartAfter"] = start_after
    if token:
        request["ContinuationToken"] = token
    if not folders:
        request["Delimiter"] = "/"
    with _asking():
        page = client().list_objects_v2(**request)
    objects = [
        Listed(
            key=str(item["Key"]),
            size=int(item.get("Size", -1)),
            etag=str(item.get("ETag", "")).strip('"'),
            last_modified=item.get("LastModified"),
        )
        for item in page.get("Contents", ())
    ]
    following = page.get("NextContinuationToken")
    more = bool(page.get("IsTruncated")) and bool(following)
    return Listing(objects, str(following) if more else None)


def put(bucket: str, key: str, body: bytes) -> None:
    """One PutObject: the object is there whole, or not changed."""
    with _asking():
        client().put_object(Bucket=bucket, Key=key, Body=body)


def delete(bucket: str, key: str) -> None:
    with _asking():
        client().delete_object(Bucket=bucket, Key=key)


def start_upload(bucket: str, key: str) -> str:
    """A multipart upload begun; its id. The object appears only when it is completed."""
    with _asking():
        return str(client().create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])


def send_part(bucket: str, key: str, upload: str, number: int, body: bytes) -> str:
    """Part `number` (from 1) of upload `upload`; its ETag, which completing it needs."""
    with _asking():
        sent = client().upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
        )
    return str(sent["ETag"])


def complete_upload(bucket: str, key: str, upload: str, etags: list[str]) -> None:
    """The upload's parts, in order, become the object at once."""
    parts = [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, 1)]
    with _asking():
        client().complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )


def abort_upload(bucket: str, key: str, upload: str) -> None:
    with _asking():
        client().abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
