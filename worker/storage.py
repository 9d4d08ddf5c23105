"""Fetching the image a job names, from the only places it may name.

`s3://bucket/key` is read through worker.s3 (endpoint, region and credentials from the
usual AWS_* variables) from the buckets, or bucket folders, in QRW_S3_BUCKETS; `file:///path`
only from under QRW_FILE_ROOTS. Nothing else is fetched: no URL a producer writes can make
a worker reach an arbitrary host.

An S3 key is opaque: everything after `s3://bucket/`, percent-decoded, so `s3://b//c/x.png`
is the key `/c/x.png` and `s3://b/c/x/` the key `c/x/`; a file path is a path, normalised and
resolved. A reference is checked whole before any byte is fetched: a control character (NUL,
tab, newline...), a lone surrogate, percent-encoding that is not UTF-8 or a literal `?` or `#`
makes it `invalid_payload`; a place outside the allow-lists (folders match whole path segments)
makes it `refused_reference`. Under a file root only regular files are read, opened
without blocking and without following a link swapped in after the check: a FIFO, socket,
device or folder is `read_failed`.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from worker import rules, s3
from worker.errors import ErrorCode, ScanFailed
from worker.settings import Settings

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Reference:
    scheme: str  # "s3" or "file"
    bucket: str
    key: str  # the S3 key, or the absolute, resolved file path

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else f"file://{self.key}"


def parse_reference(
    ref: object, settings: Settings, *, folders: FolderCache | None = None
) -> Reference:
    """Validate a reference against the configured allow-lists; raises ScanFailed.

    `folders`: resolved folders to reuse, for a caller checking many files in few folders
    whose own check is not the last (a backfill listing: the worker checks again, uncached,
    before it reads)."""
    if not isinstance(ref, str) or not ref.strip():
        raise ScanFailed(
            ErrorCode.INVALID_PAYLOAD, f"an image reference must be a string, got {ref!r}"
        )
    if _CONTROL.search(ref):
        # urlsplit silently drops tabs and newlines: the key read would not be the key named.
        raise ScanFailed(
            ErrorCode.INVALID_PAYLOAD,
            f"{_short(ref)}: a reference must not hold control characters",
        )
    parts = urlsplit(ref)
    if parts.scheme in ("s3", "file"):
        if "?" in ref or "#" in ref:
            # urlsplit takes them for a query or a fragment and the rest of the name is
            # dropped: `s3://b/a#b.png` would read the object `a`.
            raise ScanFailed(
                ErrorCode.INVALID_PAYLOAD,
                f"{_short(ref)}: percent-encode '?' and '#' (%3F, %23) in a reference",
            )
        host = _text(ref, parts.netloc)
        if parts.scheme == "s3":
            # The key is everything after `s3://bucket/`, opaque: `s3://b//c/x.png` names
            # `/c/x.png`, another object than `c/x.png`. Only that one `/` is the separator.
            return _s3_reference(ref, host, _text(ref, parts.path[1:]), settings)
        return _file_reference(ref, host, _text(ref, parts.path), settings, folders)
    raise ScanFailed(
        ErrorCode.REFUSED_REFERENCE,
        f"{_short(ref)}: only s3:// and file:// references are accepted",
    )


def _text(ref: str, component: str) -> str:
    """A URL component decoded to text a path or key can hold, or invalid_payload.

    A NUL byte ends a C string early (and, like every control character, has no place in
    a key or a file name we would read), a lone surrogate (valid in JSON as \\ud800) cannot be
    encoded, and \\udc80-\\udcff would silently become raw bytes in a file name; none of
    them can name a file or a key we were meant to read. Retrying cannot help, so this is
    an input error, answered at once.
    """
    try:
        decoded = unquote(component, errors="strict")
    except UnicodeDecodeError:
        raise ScanFailed(
            ErrorCode.INVALID_PAYLOAD,
            f"{_short(ref)}: percent-encoding must be UTF-8",
        ) from None
    if _CONTROL.search(decoded) or not rules.text_ok(decoded):
        raise ScanFailed(
            ErrorCode.INVALID_PAYLOAD,
            f"{_short(ref)}: a reference must not hold a control character or a lone surrogate",
        )
    return decoded


def _s3_reference(ref: str, bucket: str, key: str, settings: Settings) -> Reference:
    # A key ending in `/` is an object like any other (S3's console makes them as folders).
    if not bucket or not key:
        raise ScanFailed(ErrorCode.INVALID_PAYLOAD, f"{_short(ref)}: expected s3://bucket/key")
    if ".." in key.split("/"):
        raise ScanFailed(ErrorCode.REFUSED_REFERENCE, f"{_short(ref)}: '..' is not allowed in keys")
    for allowed in settings.s3_buckets:
        allowed_bucket, _, prefix = allowed.partition("/")
        # A folder matches whole path segments: `in` admits `in/x`, never `in-evil/x`, nor
        # `/in/x` (its segments are "", "in", "x"; Settings refuses an empty one in a folder).
        folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        if bucket == allowed_bucket and key.startswith(folder):
            return Reference("s3", bucket, key)
    raise ScanFailed(
        ErrorCode.REFUSED_REFERENCE,
        f"{_short(ref)}: bucket or folder not in QRW_S3_BUCKETS",
    )


def _file_reference(
    ref: str, host: str, path: str, settings: Settings, folders: FolderCache | None
) -> Reference:
    if host not in ("", "localhost") or not path.startswith("/"):
        raise ScanFailed(
            ErrorCode.INVALID_PAYLOAD, f"{_short(ref)}: expected file:///absolute/path"
        )
    if ".." in path.split("/"):
        raise ScanFailed(ErrorCode.REFUSED_REFERENCE, f"{_short(ref)}: '..' is not allowed")
    # Resolving follows symlinks, so a link inside a root cannot lead outside it.
    resolved = os.path.realpath(path) if folders is None else folders.resolve(path)
    for root in settings.file_roots:
        real_root = _resolved_root(root)
        # Whole path segments: the root /data/in admits /data/in/x, never /data/in-evil/x.
        if resolved == real_root or resolved.startswith(real_root.rstrip("/") + "/"):
            return Reference("file", "", resolved)
    raise ScanFailed(ErrorCode.REFUSED_REFERENCE, f"{_short(ref)}: not under QRW_FILE_ROOTS")


class FolderCache:
    """realpath() of files through a bounded cache of their resolved folders: one lstat per
    file instead of one per path component. A folder swapped for a symlink after it was
    cached goes unnoticed, which is why only a check that is not the last may use it."""

    def __init__(self, size: int = 4096) -> None:
        self._folder = lru_cache(maxsize=size)(os.path.realpath)

    def resolve(self, path: str) -> str:
        folder, name = os.path.split(path)
        if not name or name in (".", ".."):
            return os.path.realpath(path)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return os.path.realpath(path)
        except OSError:
            return os.path.realpath(path)  # missing: resolved as far as it exists
        return os.path.join(self._folder(folder), name)


@lru_cache(maxsize=64)
def _resolved_root(root: str) -> str:
    # A root is a setting, fixed for the process's life: resolving it once instead of for
    # every reference halves the syscalls of a backfill listing a million-line manifest.
    return os.path.realpath(root)


def _short(ref: str) -> str:
    # repr, cut short: a hostile reference may hold control characters or be megabytes long.
    return rules.quote(ref)


def fetch(
    ref: Reference,
    settings: Settings,
    *,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """The object's bytes, with transient S3 failures retried (worker.s3.call).

    Raises ScanFailed: not_found, image_too_large, read_failed, or storage_unavailable
    once QRW_FETCH_ATTEMPTS tries have failed transiently, or when the next try would start
    after `deadline` (time.monotonic()).
    """
    if ref.scheme == "file":
        return _read_file(ref, settings)
    retry = s3.Retry(attempts=settings.fetch_attempts, base_s=0.25, cap_s=4.0)
    try:
        return s3.call(
            str(ref), lambda: _read_s3(ref, settings), retry, deadline=deadline, sleep=sleep
        )
    except s3.GaveUp as exc:
        raise ScanFailed(ErrorCode.STORAGE_UNAVAILABLE, f"{ref}: storage {exc}") from exc


def _too_large(ref: Reference, size: int, settings: Settings) -> ScanFailed:
    return ScanFailed(
        ErrorCode.IMAGE_TOO_LARGE,
        f"{ref} is {size} bytes or more; the limit is {settings.max_bytes} (QRW_MAX_BYTES)",
    )


# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, for as long as
# the job's hard timeout, whatever its deadline. O_NOFOLLOW: the path was resolved when the
# reference was checked; a symlink swapped in since then is refused, not followed.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _read_file(ref: Reference, settings: Settings) -> bytes:
    try:
        fd = os.open(ref.key, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise ScanFailed(ErrorCode.NOT_FOUND, f"{ref} does not exist") from exc
    except OSError as exc:
        raise ScanFailed(ErrorCode.READ_FAILED, f"{ref} cannot be read: {exc.strerror}") from exc
    try:
        # What was opened, not what the path named a moment earlier, decides.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ScanFailed(ErrorCode.READ_FAILED, f"{ref} is {kind}: not read")
        with os.fdopen(fd, "rb") as handle:
            if info.st_size > settings.max_bytes:
                raise _too_large(ref, info.st_size, settings)
            data = handle.read(settings.max_bytes + 1)
    except OSError as exc:
        raise ScanFailed(ErrorCode.READ_FAILED, f"{ref} cannot be read: {exc.strerror}") from exc
    if len(data) > settings.max_bytes:  # the file grew while we read it
        raise _too_large(ref, len(data), settings)
    return data


def _read_s3(ref: Reference, settings: Settings) -> bytes:
    """One GetObject, its body read whole; transient failures are raised for s3.call."""
    try:
        return s3.read(ref.bucket, ref.key, settings.max_bytes)
    except s3.TooLarge as exc:
        raise _too_large(ref, exc.size, settings) from None
    except s3.Missing as exc:
        raise ScanFailed(ErrorCode.NOT_FOUND, f"{ref} does not exist ({exc.code})") from exc
    except s3.Refused as exc:
        raise ScanFailed(ErrorCode.READ_FAILED, f"{ref} cannot be read: {exc.code}") from exc
