"""Fetching the image a job names, from the only places it may name.

`s3://bucket/key` is read with boto3 (endpoint, region and credentials from the usual
AWS_* variables, so AWS S3, MinIO, Ceph and R2 all work) from the buckets, or bucket
folders, in QRW_S3_BUCKETS; `file:///path` only from under QRW_FILE_ROOTS. Nothing
else is fetched: no URL a producer writes can make a worker reach an arbitrary host.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from worker.engine.errors import ErrorCode, ScanFailed
from worker.settings import Settings

# S3 error codes that say "try again", whatever the HTTP status says.
_TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "RequestTimeTooSkewed",
    }
)
_MISSING_S3_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


class TransientFetchError(Exception):
    """Storage failed in a way that may pass: a retry is worth it."""


@dataclass(frozen=True, slots=True)
class Reference:
    scheme: str  # "s3" or "file"
    bucket: str
    key: str  # the S3 key, or the absolute, resolved file path

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else f"file://{self.key}"


def parse_reference(ref: object, settings: Settings) -> Reference:
    """Validate a reference against the configured allow-lists; raises ScanFailed."""
    if not isinstance(ref, str) or not ref.strip():
        raise ScanFailed(
            ErrorCode.INVALID_PAYLOAD, f"an image reference must be a string, got {ref!r}"
        )
    parts = urlsplit(ref)
    if parts.scheme == "s3":
        return _s3_reference(ref, parts.netloc, unquote(parts.path.lstrip("/")), settings)
    if parts.scheme == "file":
        return _file_reference(ref, parts.netloc, unquote(parts.path), settings)
    raise ScanFailed(
        ErrorCode.REFUSED_REFERENCE,
        f"{_short(ref)}: only s3:// and file:// references are accepted",
    )


def _s3_reference(ref: str, bucket: str, key: str, settings: Settings) -> Reference:
    if not bucket or not key or key.endswith("/"):
        raise ScanFailed(ErrorCode.INVALID_PAYLOAD, f"{_short(ref)}: expected s3://bucket/key")
    if ".." in key.split("/"):
        raise ScanFailed(ErrorCode.REFUSED_REFERENCE, f"{_short(ref)}: '..' is not allowed in keys")
    for allowed in settings.s3_buckets:
        allowed_bucket, _, prefix = allowed.partition("/")
        if bucket == allowed_bucket and key.startswith(prefix):
            return Reference("s3", bucket, key)
    raise ScanFailed(
        ErrorCode.REFUSED_REFERENCE,
        f"{_short(ref)}: bucket or folder not in QRW_S3_BUCKETS",
    )


def _file_reference(ref: str, host: str, path: str, settings: Settings) -> Reference:
    if host not in ("", "localhost") or not path.startswith("/"):
        raise ScanFailed(
            ErrorCode.INVALID_PAYLOAD, f"{_short(ref)}: expected file:///absolute/path"
        )
    if ".." in path.split("/"):
        raise ScanFailed(ErrorCode.REFUSED_REFERENCE, f"{_short(ref)}: '..' is not allowed")
    # Resolving follows symlinks, so a link inside a root cannot lead outside it.
    resolved = Path(os.path.realpath(path))
    for root in settings.file_roots:
        if resolved.is_relative_to(os.path.realpath(root)):
            return Reference("file", "", str(resolved))
    raise ScanFailed(ErrorCode.REFUSED_REFERENCE, f"{_short(ref)}: not under QRW_FILE_ROOTS")


def _short(ref: str) -> str:
    return ref if len(ref) <= 200 else ref[:197] + "..."


def fetch(
    ref: Reference, settings: Settings, *, sleep: Callable[[float], None] = time.sleep
) -> bytes:
    """The object's bytes, with transient failures retried with jittered exponential backoff.

    Raises ScanFailed: not_found, image_too_large, read_failed, or storage_unavailable
    once QRW_FETCH_ATTEMPTS tries have failed transiently.
    """
    reader = _read_s3 if ref.scheme == "s3" else _read_file
    last: TransientFetchError | None = None
    for attempt in range(settings.fetch_attempts):
        if attempt:
            sleep(min(4.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random()))
        try:
            return reader(ref, settings)
        except TransientFetchError as exc:
            last = exc
    raise ScanFailed(
        ErrorCode.STORAGE_UNAVAILABLE,
        f"{ref}: storage failed {settings.fetch_attempts} times: {last}",
    )


def _too_large(ref: Reference, size: int, settings: Settings) -> ScanFailed:
    return ScanFailed(
        ErrorCode.IMAGE_TOO_LARGE,
        f"{ref} is {size} bytes or more; the limit is {settings.max_bytes} (QRW_MAX_BYTES)",
    )


def _read_file(ref: Reference, settings: Settings) -> bytes:
    try:
        with open(ref.key, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > settings.max_bytes:
                raise _too_large(ref, size, settings)
            data = handle.read(settings.max_bytes + 1)
    except FileNotFoundError as exc:
        raise ScanFailed(ErrorCode.NOT_FOUND, f"{ref} does not exist") from exc
    except IsADirectoryError as exc:
        raise ScanFailed(ErrorCode.READ_FAILED, f"{ref} is a directory") from exc
    except OSError as exc:
        raise ScanFailed(ErrorCode.READ_FAILED, f"{ref} cannot be read: {exc.strerror}") from exc
    if len(data) > settings.max_bytes:  # the file grew while we read it
        raise _too_large(ref, len(data), settings)
    return data


@cache
def s3_client() -> Any:
    """One client per process: boto3 reads AWS_ENDPOINT_URL, AWS_REGION and credentials.

    Its own retries are off; `fetch` retries, so the attempt count is one setting.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=4,
    )
    return boto3.session.Session().client("s3", config=config)


def _read_s3(ref: Reference, settings: Settings) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = s3_client().get_object(Bucket=ref.bucket, Key=ref.key)
        size = int(response.get("ContentLength") or 0)
        body = response["Body"]
        try:
            if size > settings.max_bytes:
                raise _too_large(ref, size, settings)
            # Read one byte past the limit: a server that lies about the length is caught
            # without ever holding more than the limit in memory.
            data = body.read(settings.max_bytes + 1)
        finally:
            body.close()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _MISSING_S3_CODES or status == 404:
            raise ScanFailed(
                ErrorCode.NOT_FOUND, f"{ref} does not exist ({code or status})"
            ) from exc
        if code in _TRANSIENT_S3_CODES or status >= 500 or status == 429:
            raise TransientFetchError(f"{code or status}: {error.get('Message', '')}") from exc
        raise ScanFailed(ErrorCode.READ_FAILED, f"{ref} cannot be read: {code or status}") from exc
    except BotoCoreError as exc:
        # Connection refused or reset, timeouts, truncated bodies: the network, not the request.
        raise TransientFetchError(f"{type(exc).__name__}: {exc}") from exc
    except (ConnectionError, TimeoutError) as exc:
        raise TransientFetchError(f"{type(exc).__name__}: {exc}") from exc
    if len(data) > settings.max_bytes:
        raise _too_large(ref, len(data), settings)
    return data
