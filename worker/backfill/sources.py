"""What a backfill reads: S3 prefixes or a manifest, filtered, sharded and resumable.

Sources (a `SourceSpec` holds exactly one kind):
- S3 prefixes, `s3://bucket/prefix/` (several, listed one after another in the order given):
  ListObjectsV2 a page at a time, so memory stays flat whatever the archive size; keys come
  in S3's key order, and a resumed run lists from `StartAfter=<the last key taken>`.
- A manifest, `PATH`, `file:///path` or `s3://bucket/key` (gzip allowed, by its magic bytes):
  - a plain list: one reference per line, `s3://...` or `file:///...`, written as a job
    would name it (percent-encode `%`, `?`, `#` and white space in keys). Blank lines and
    `#` comments are skipped, and so is a UTF-8 byte-order mark at the start. A line may
    carry what its writer knows of the object, TAB-separated:
    `ref<TAB>etag<TAB>size<TAB>last_modified` (each optional; the date in ISO 8601, UTC
    when it has no zone; `manifest_line` writes them). Without them an s3
    object's etag is "" and its size -1: a HEAD per line would cost more than the backfill
    itself at 10^8 lines. A file:// object is stat'ed: etag "<size>-<mtime_ns>".
  - an S3 Inventory `manifest.json` (fileFormat CSV; ORC and Parquet are refused): its data
    files, CSV or CSV.gz in the inventory's destination bucket, are streamed row by row,
    never loaded whole. Keys are URL-decoded (the inventory writes them form-encoded).
    Rows of old versions and delete markers are skipped.
  The manifest file itself may be anywhere this process can read when it is a local path
  (it is the operator's own file); an s3:// manifest, and an Inventory's data files, must
  be inside QRW_S3_BUCKETS. Every object a manifest names must be inside the allow-lists.

Everything a job will read is checked here with the workers' own rules
(`storage.parse_reference`), so a backfill never enqueues a reference a worker refuses.

Skips, each counted in `Counts.skipped` under its reason, decided in this order:
- `shard`: another process's share (`--shard i/n`: sha1 of the key, mod n); first, so the
  other counts of n shard processes add up to those of one process over the whole source;
- `folder` (an S3 key ending in `/`), `bad_key` (a listed key no job could read: control
  characters, `..`), `old_version` and `delete_marker` (Inventory rows),
  `outside_allow_list` (Inventory rows: an inventory covers a whole bucket, the allow-list
  may name one folder of it);
- `include` (no glob matches the key's file name; shell-style, case-sensitive),
  `modified_after` (modified at or before the date), `max_bytes` (larger).
  A size or date the source does not give passes its filter: the workers still enforce
  QRW_MAX_BYTES.
Then `limit` stops the listing once that many objects are taken.

Bad manifest lines (not a reference, refused by the allow-lists, a malformed TAB field or
Inventory row, not UTF-8, longer than MAX_LINE) are never fatal: each is counted under
`skipped["bad_line"]` and, for the first BAD_LINES_KEPT of them, listed in
`Counts.bad_lines` as (line number, reason) (for an Inventory, the number of the row in its
data file, named in the reason). Every shard process reports every bad line.

Positions: `iter_objects` yields each object with the `Position` just after it. Resumed
from that position (with the `Counts` as they were when that object was yielded), the
iterator yields exactly the objects that follow, and ends with the same counts as a run
that was never interrupted: counts read right after an object is yielded hold exactly the
skips and bad lines before it, so store them together with its position.

Transient S3 failures (worker.s3.is_transient: 5xx, 429, throttling, timeouts, connections)
are retried with jittered exponential backoff (worker.s3.call, `Retry`), also in the middle
of a streamed manifest (re-opened where it broke off); anything else, or too many failures
in a row, is a `BackfillError`.
"""

from __future__ import annotations

import csv
import fnmatch
import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, TypeVar
from urllib.parse import quote, unquote, unquote_plus, urlsplit

import structlog

from worker import rules, s3, storage
from worker.backfill import (
    BAD_LINE,
    BackfillError,
    Counts,
    Filters,
    SourceSpec,
    StoredObject,
)
from worker.errors import ErrorCode, ScanFailed
from worker.s3 import Retry
from worker.settings import Settings

log = structlog.get_logger("backfill")

T = TypeVar("T")
# Opens a manifest or data file at a byte offset (BackfillError when it cannot).
Opener = Callable[[int], io.BufferedReader]

PAGE_SIZE = 1000  # ListObjectsV2's largest page
BAD_LINES_KEPT = 1000  # listed with their numbers; all of them are counted
MAX_LINE = 64 * 1024  # bytes; no reference is this long: a line that is, is bad
MAX_INVENTORY_MANIFEST = 64 * 1024 * 1024  # manifest.json lists files, not objects

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What a key must have percent-encoded to survive storage.parse_reference's urlsplit and
# unquote unchanged: '%' (decoded), '?' and '#' (query, fragment), white space (stripped
# at the ends), control characters (refused anyway). Everything else stays readable.
_REF_ESCAPE = re.compile(r"[%?#\s\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a listing stands: resumable, and small enough to store with every enqueue."""

    source: int = 0  # index into spec.prefixes, or into an Inventory's data files
    after: str = ""  # the last S3 key taken in that source, or the last line number taken
    taken: int = 0  # objects taken so far (what --limit counts)

    def to_json(self) -> str:
        return json.dumps(
            {"source": self.source, "after": self.after, "taken": self.taken},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Position:
        try:
            value = json.loads(text)
            source, after, taken = value["source"], value["after"], value["taken"]
        except (ValueError, TypeError, KeyError) as exc:
            raise BackfillError(f"the stored listing position is not valid: {exc}") from None
        if (
            not isinstance(source, int)
            or not isinstance(taken, int)
            or not isinstance(after, str)
            or isinstance(source, bool)
            or isinstance(taken, bool)
            or source < 0
            or taken < 0
        ):
            raise BackfillError(f"the stored listing position is not valid: {rules.quote(text)}")
        return cls(source, after, taken)


# How patiently a backfill's reads are retried: a run is long, and can wait out a bad minute.
RETRY = Retry(attempts=6, base_s=0.5, cap_s=8.0)


@dataclass(slots=True)
class DryRun:
    """What a run over this source would take, without enqueueing anything."""

    objects: int = 0
    bytes: int = 0  # of the objects whose size the source gives
    unsized: int = 0  # objects whose size the source does not give (plain manifest lines)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> objects ("bad_line": lines)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # the first BAD_LINES_KEPT

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "bytes": self.bytes,
            "unsized": self.unsized,
            "skipped": dict(self.skipped),
            "bad_lines": [{"line": line, "reason": reason} for line, reason in self.bad_lines],
        }


# ---------------------------------------------------------------------------------------
# The public functions


def check_source(spec: SourceSpec, settings: Settings, *, retry: Retry = RETRY) -> None:
    """Everything about the source that can be known before a run starts; BackfillError.

    Prefixes: inside QRW_S3_BUCKETS, not overlapping (an object listed twice would be read
    twice), each bucket listable. A manifest: readable, inside the allow-lists when in S3;
    an Inventory: CSV, its source bucket allowed, every data file allowed and readable.
    """
    _check_spec(spec)
    if spec.prefixes:
        for bucket, prefix in _prefixes(spec, settings):
            _call(
                f"listing s3://{bucket}/{prefix}",
                retry,
                lambda bucket=bucket, prefix=prefix: s3.list_page(bucket, prefix, limit=1),
            )
        return
    assert spec.manifest is not None
    manifest = _Manifest.open(spec.manifest, settings, retry)
    if manifest.inventory is not None:
        bucket = manifest.inventory.bucket
        for data in manifest.inventory.files:
            _call(f"reading s3://{bucket}/{data}", retry, lambda data=data: s3.head(bucket, data))


def check_filters(filters: Filters) -> None:
    """Filters that cannot select anything sensible; BackfillError."""
    if filters.shard is not None:
        index, count = filters.shard
        if not 1 <= count <= 1_000_000 or not 0 <= index < count:
            raise BackfillError(f"--shard i/n needs 0 <= i < n, got {index}/{count}")
    if filters.limit is not None and filters.limit < 1:
        raise BackfillError(f"--limit must be 1 or more, got {filters.limit}")
    if filters.max_bytes is not None and filters.max_bytes < 0:
        raise BackfillError(f"--max-bytes must be 0 or more, got {filters.max_bytes}")
    for glob in filters.include:
        if not glob or "/" in glob:
            raise BackfillError(
                f"--include {rules.quote(glob)}: a glob matches a file name, without '/'"
            )


def iter_objects(
    spec: SourceSpec,
    filters: Filters,
    settings: Settings,
    position: Position | None,
    counts: Counts,
    *,
    retry: Retry = RETRY,
    page_size: int = PAGE_SIZE,
) -> Iterator[tuple[StoredObject, Position]]:
    """Every object the filters take, from `position` on, each with the position after it.

    Skips and bad lines are added to `counts` as they are met (see the module's text for
    what to store with a position). Raises BackfillError (the spec and filters at once,
    listing and reading failures as they happen).
    """
    _check_spec(spec)
    check_filters(filters)
    # The allow-lists now, not at the first next(): no I/O, and a refusal comes first.
    if spec.prefixes:
        _prefixes(spec, settings)
    else:
        assert spec.manifest is not None
        _manifest_opener(spec.manifest, settings, retry)
    if not 1 <= page_size <= PAGE_SIZE:
        raise BackfillError(f"a listing page holds 1 to {PAGE_SIZE} keys, got {page_size}")
    return _iterate(spec, filters, settings, position or Position(), counts, retry, page_size)


def dry_run(
    spec: SourceSpec,
    filters: Filters,
    settings: Settings,
    *,
    retry: Retry = RETRY,
    page_size: int = PAGE_SIZE,
) -> DryRun:
    """Lists and counts the whole source as a run would take it; enqueues nothing."""
    check_source(spec, settings, retry=retry)
    counts = Counts()
    result = DryRun()
    for obj, _ in iter_objects(
        spec, filters, settings, None, counts, retry=retry, page_size=page_size
    ):
        result.objects += 1
        if obj.size >= 0:
            result.bytes += obj.size
        else:
            result.unsized += 1
    result.skipped = dict(sorted(counts.skipped.items()))
    result.bad_lines = list(counts.bad_lines)
    return result


def s3_ref(bucket: str, key: str) -> str:
    """The reference a worker reads back as exactly `key` in `bucket`."""
    return f"s3://{bucket}/{_REF_ESCAPE.sub(lambda m: quote(m.group()), key)}"


def manifest_line(obj: StoredObject) -> str:
    """A plain manifest line naming `obj` with what is known of it (e.g. for `retry`)."""
    fields = [obj.ref, obj.etag, str(obj.size) if obj.size >= 0 else ""]
    if obj.last_modified is not None:
        fields.append(obj.last_modified.isoformat())
    return "\t".join(fields).rstrip("\t")


def shard_of(key: str, count: int) -> int:
    """Which of `count` shards takes `key`: stable across processes, machines and runs."""
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


# ---------------------------------------------------------------------------------------
# Filtering and positions


@dataclass(frozen=True, slots=True)
class _Entry:
    """One object a source names, with the cursor just after it."""

    source: int
    after: str
    key: str  # what --shard hashes
    obj: StoredObject | None  # None when the source itself skips it
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _BadLine:
    line: int
    reason: str


def _iterate(
    spec: SourceSpec,
    filters: Filters,
    settings: Settings,
    start: Position,
    counts: Counts,
    retry: Retry,
    page_size: int,
) -> Iterator[tuple[StoredObject, Position]]:
    taken = start.taken
    if filters.limit is not None and taken >= filters.limit:
        return
    after = filters.modified_after
    if after is not None and after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    entries = (
        _prefix_entries(spec, settings, start, retry, page_size)
        if spec.prefixes
        else _manifest_entries(spec, settings, start, retry)
    )
    for entry in entries:
        if isinstance(entry, _BadLine):
            _count(counts, BAD_LINE)
            if len(counts.bad_lines) < BAD_LINES_KEPT:
                counts.bad_lines.append((entry.line, entry.reason))
            continue
        reason = _skip_reason(entry, filters, after)
        if reason is not None:
            _count(counts, reason)
            continue
        assert entry.obj is not None
        taken += 1
        yield entry.obj, Position(entry.source, entry.after, taken)
        if filters.limit is not None and taken >= filters.limit:
            return


def _skip_reason(entry: _Entry, filters: Filters, after: datetime | None) -> str | None:
    if filters.shard is not None:
        index, count = filters.shard
        if shard_of(entry.key, count) != index:
            return "shard"
    if entry.reason is not None or entry.obj is None:
        return entry.reason or "bad_key"
    obj = entry.obj
    if filters.include:
        name = obj.key.rsplit("/", 1)[-1]
        if not any(fnmatch.fnmatchcase(name, glob) for glob in filters.include):
            return "include"
    if after is not None and obj.last_modified is not None:
        modified = obj.last_modified
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        if modified <= after:
            return "modified_after"
    if filters.max_bytes is not None and obj.size > filters.max_bytes:
        return "max_bytes"
    return None


def _count(counts: Counts, reason: str) -> None:
    counts.skipped[reason] = counts.skipped.get(reason, 0) + 1


def _check_spec(spec: SourceSpec) -> None:
    if bool(spec.prefixes) == bool(spec.manifest):
        raise BackfillError("give one kind of source: --source prefixes, or one --manifest")


# ---------------------------------------------------------------------------------------
# S3 prefixes


def _prefixes(spec: SourceSpec, settings: Settings) -> list[tuple[str, str]]:
    """(bucket, key prefix) for each --source, checked against QRW_S3_BUCKETS."""
    found: list[tuple[str, str]] = []
    for text in spec.prefixes:
        where = rules.quote(text)
        if _CONTROL.search(text):
            raise BackfillError(f"--source {where}: control characters are not allowed")
        parts = urlsplit(text)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise BackfillError(
                f"--source {where}: expected s3://bucket/prefix/ (percent-encode '?' and '#')"
            )
        try:
            # Opaque, as storage reads keys: only the `/` after the bucket separates, so
            # `s3://b//` is the prefix `/` (the keys under it), not the whole bucket.
            prefix = unquote(parts.path[1:], errors="strict")
        except UnicodeDecodeError:
            raise BackfillError(f"--source {where}: percent-encoding must be UTF-8") from None
        if ".." in prefix.split("/"):
            raise BackfillError(f"--source {where}: '..' is not allowed")
        if not _prefix_allowed(parts.netloc, prefix, settings):
            hint = (
                f"; end it with '/' (as written it also lists {prefix}-other/)"
                if prefix and _prefix_allowed(parts.netloc, prefix + "/", settings)
                else ""
            )
            raise BackfillError(
                f"--source {where}: not inside QRW_S3_BUCKETS "
                f"({', '.join(settings.s3_buckets) or 'empty'}): a prefix must lie within an "
                f"allowed bucket or folder{hint}"
            )
        found.append((parts.netloc, prefix))
    for index, (bucket, prefix) in enumerate(found):
        for other_bucket, other in found[index + 1 :]:
            if bucket == other_bucket and (prefix.startswith(other) or other.startswith(prefix)):
                raise BackfillError(
                    f"--source s3://{bucket}/{prefix} and s3://{bucket}/{other} overlap: "
                    "their common objects would be read twice"
                )
    return found


def _prefix_allowed(bucket: str, prefix: str, settings: Settings) -> bool:
    for allowed in settings.s3_buckets:
        allowed_bucket, _, folder = allowed.partition("/")
        # Whole segments, as storage does: `in/` admits the prefix `in/x`, never `in-evil/`.
        folder = folder if not folder or folder.endswith("/") else folder + "/"
        if bucket == allowed_bucket and prefix.startswith(folder):
            return True
    return False


def _prefix_entries(
    spec: SourceSpec, settings: Settings, start: Position, retry: Retry, page_size: int
) -> Iterator[_Entry]:
    for index, (bucket, prefix) in enumerate(_prefixes(spec, settings)):
        if index < start.source:
            continue
        start_after = start.after if index == start.source else ""
        for item in _list(bucket, prefix, start_after, retry, page_size):
            yield _listed(index, bucket, item, settings)


def _list(
    bucket: str, prefix: str, start_after: str, retry: Retry, page_size: int
) -> Iterator[s3.Listed]:
    token: str | None = None
    while True:
        page = _call(
            f"listing s3://{bucket}/{prefix}",
            retry,
            lambda token=token: s3.list_page(
                bucket, prefix, limit=page_size, start_after=start_after, token=token
            ),
        )
        yield from page.objects
        if page.next_token is None:
            return
        token = page.next_token


def _listed(index: int, bucket: str, item: s3.Listed, settings: Settings) -> _Entry:
    key = item.key
    if key.endswith("/"):
        return _Entry(index, key, key, None, "folder")
    ref = s3_ref(bucket, key)
    try:
        parsed = storage.parse_reference(ref, settings)
    except ScanFailed as exc:
        log.warning("backfill_key_skipped", ref=ref, reason=exc.message)
        return _Entry(index, key, key, None, "bad_key")
    obj = StoredObject(
        ref=ref,
        key=key,
        etag=item.etag,
        size=item.size,
        last_modified=item.last_modified,
        identity=str(parsed),
    )
    return _Entry(index, key, key, obj)


# ---------------------------------------------------------------------------------------
# Manifests


@dataclass(frozen=True, slots=True)
class _Inventory:
    bucket: str  # where its data files are
    files: tuple[str, ...]  # their keys, in the manifest's order
    columns: dict[str, int]  # fileSchema: column name -> index


@dataclass(frozen=True, slots=True)
class _Manifest:
    where: str  # for messages
    opener: Opener
    inventory: _Inventory | None

    @classmethod
    def open(cls, manifest: str, settings: Settings, retry: Retry) -> _Manifest:
        """Where the manifest is and which kind it is: read its beginning (BackfillError)."""
        where, opener = _manifest_opener(manifest, settings, retry)
        raw = opener(0)
        try:
            stream = _unzipped(raw)
            head = stream.read(4096)
            # A plain list's lines are references, and no reference starts with '{'.
            if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
                return cls(where, opener, None)
            body = head + stream.read(MAX_INVENTORY_MANIFEST)
        except s3.stream_errors() as exc:
            raise BackfillError(f"{where}: cannot be read: {exc}") from None
        finally:
            raw.close()
        if len(body) > MAX_INVENTORY_MANIFEST:
            raise BackfillError(f"{where}: an Inventory manifest.json this large is not one")
        text = body.decode("utf-8-sig", "replace")
        return cls(where, opener, _inventory(where, text, manifest, settings))


def _manifest_opener(manifest: str, settings: Settings, retry: Retry) -> tuple[str, Opener]:
    where = f"--manifest {rules.quote(manifest)}"
    if manifest.startswith("s3://"):
        try:
            ref = storage.parse_reference(manifest, settings)
        except ScanFailed as exc:
            raise BackfillError(f"--manifest: {exc.message}") from None
        return where, _s3_opener(ref.bucket, ref.key, retry)
    if _CONTROL.search(manifest):
        raise BackfillError(f"{where}: control characters are not allowed")
    path = manifest
    if manifest.startswith("file://"):
        parts = urlsplit(manifest)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise BackfillError(f"{where}: expected file:///absolute/path")
        path = unquote(parts.path)
    elif "://" in manifest:
        raise BackfillError(f"{where}: expected a path, file:///path or s3://bucket/key")
    path = os.path.abspath(os.path.expanduser(path))

    def opener(offset: int) -> io.BufferedReader:
        try:
            stream = open(path, "rb")  # noqa: SIM115 (closed by the reader)
        except OSError as exc:
            raise BackfillError(f"{where}: cannot be read: {exc.strerror}") from None
        stream.seek(offset)
        return stream

    return where, opener


def _s3_opener(bucket: str, key: str, retry: Retry) -> Opener:
    """Opens the object from a byte offset; every read after the first is of the same
    version (If-Match its ETag): going on from an offset into another file would be wrong."""
    etag: list[str] = []

    def get(offset: int) -> io.BufferedReader:
        try:
            body, tag = s3.open_body(bucket, key, offset=offset, if_match=etag[0] if etag else "")
        except s3.Refused as exc:
            if offset and exc.code == "InvalidRange":
                return io.BufferedReader(io.BytesIO())  # it broke off right at the end
            raise
        if not etag and tag:
            etag.append(tag)
        return io.BufferedReader(body, 1 << 16)

    def opener(offset: int) -> io.BufferedReader:
        return _call(f"reading s3://{bucket}/{key}", retry, lambda: get(offset))

    return opener


def _inventory(where: str, body: str, manifest: str, settings: Settings) -> _Inventory:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise BackfillError(f"{where}: not a valid Inventory manifest.json: {exc}") from None
    if not isinstance(value, dict):
        raise BackfillError(f"{where}: an Inventory manifest.json is a JSON object")
    if str(value.get("fileFormat", "")).upper() != "CSV":
        raise BackfillError(
            f"{where}: fileFormat {rules.quote(value.get('fileFormat'))} is not supported; "
            "configure the inventory as CSV"
        )
    schema = value.get("fileSchema")
    if not isinstance(schema, str):
        raise BackfillError(f"{where}: fileSchema is missing")
    columns = {name.strip(): index for index, name in enumerate(schema.split(","))}
    if "Bucket" not in columns or "Key" not in columns:
        raise BackfillError(f"{where}: fileSchema must have Bucket and Key, got {schema!r}")
    source = value.get("sourceBucket")
    if not isinstance(source, str) or not any(
        allowed.partition("/")[0] == source for allowed in settings.s3_buckets
    ):
        raise BackfillError(
            f"{where}: the inventory's sourceBucket {rules.quote(source)} is not in QRW_S3_BUCKETS"
        )
    destination = value.get("destinationBucket")
    if isinstance(destination, str) and destination:
        # An ARN, arn:aws:s3:::bucket; some writers give the plain name.
        bucket = destination.rsplit(":", 1)[-1]
    elif manifest.startswith("s3://"):
        bucket = urlsplit(manifest).netloc
    else:
        raise BackfillError(f"{where}: destinationBucket is missing")
    files = value.get("files")
    if not isinstance(files, list) or not files:
        raise BackfillError(f"{where}: files lists no data files")
    keys: list[str] = []
    for entry in files:
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, str) or not key:
            raise BackfillError(f"{where}: every files[] entry needs a key")
        try:
            storage.parse_reference(s3_ref(bucket, key), settings)
        except ScanFailed as exc:
            raise BackfillError(f"{where}: data file {exc.message}") from None
        keys.append(key)
    return _Inventory(bucket, tuple(keys), columns)


def _manifest_entries(
    spec: SourceSpec, settings: Settings, start: Position, retry: Retry
) -> Iterator[_Entry | _BadLine]:
    assert spec.manifest is not None
    manifest = _Manifest.open(spec.manifest, settings, retry)
    try:
        skip = int(start.after or 0)
    except ValueError:
        raise BackfillError(f"the stored position {start.after!r} is not a line number") from None
    if manifest.inventory is None:
        if start.source == 0:
            folders = storage.FolderCache()
            for number, line in _lines(manifest.where, manifest.opener, skip, retry):
                yield from _plain_line(number, line, settings, folders)
        return
    inventory = manifest.inventory
    for index, data in enumerate(inventory.files):
        if index < start.source:
            continue
        opener = _s3_opener(inventory.bucket, data, retry)
        where = f"s3://{inventory.bucket}/{data}"
        name = data.rsplit("/", 1)[-1]
        first = skip if index == start.source else 0
        for number, line in _lines(where, opener, first, retry):
            yield _inventory_row(index, number, line, name, inventory.columns, settings)


def _plain_line(
    number: int, line: str | None, settings: Settings, folders: storage.FolderCache
) -> Iterator[_Entry | _BadLine]:
    if line is None:
        yield _BadLine(number, f"longer than {MAX_LINE} bytes")
        return
    line = line.strip(" \r\n")
    if not line or line.startswith("#"):
        return
    if not rules.text_ok(line):
        yield _BadLine(number, "not UTF-8")
        return
    fields = line.split("\t")
    if len(fields) > 4:
        yield _BadLine(number, "expected ref, etag, size, last_modified: at most 4 TAB fields")
        return
    text, etag, size_text, modified_text = (*fields, "", "", "")[:4]
    try:
        # The worker checks the reference again, uncached, before it reads the file.
        ref = storage.parse_reference(text.strip(), settings, folders=folders)
    except ScanFailed as exc:
        yield _BadLine(number, exc.message)
        return
    size = -1
    if size_text.strip():
        if not size_text.strip().isascii() or not size_text.strip().isdigit():
            yield _BadLine(number, f"size {rules.quote(size_text)} is not a number of bytes")
            return
        size = int(size_text)
    modified: datetime | None = None
    if modified_text.strip():
        try:
            modified = datetime.fromisoformat(modified_text.strip())
        except ValueError:
            yield _BadLine(number, f"last_modified {rules.quote(modified_text)} is not ISO 8601")
            return
    etag = etag.strip().strip('"')
    if ref.scheme == "file" and (not etag or size < 0 or modified is None):
        try:
            info = os.stat(ref.key)
        except OSError:
            pass  # the job will say not_found (or read_failed): one output line, as for any
        else:
            etag = etag or f"{info.st_size}-{info.st_mtime_ns}"
            size = info.st_size if size < 0 else size
            modified = modified or datetime.fromtimestamp(info.st_mtime, UTC)
    obj = StoredObject(text.strip(), ref.key, etag, size, modified, str(ref))
    yield _Entry(0, str(number), ref.key, obj)


def _inventory_row(
    index: int,
    number: int,
    line: str | None,
    name: str,
    columns: dict[str, int],
    settings: Settings,
) -> _Entry | _BadLine:
    if line is None:
        return _BadLine(number, f"{name}: longer than {MAX_LINE} bytes")
    try:
        row = next(csv.reader([line]))
    except (csv.Error, StopIteration) as exc:
        return _BadLine(number, f"{name}: not a CSV row: {exc}")

    def column(column_name: str) -> str:
        at = columns.get(column_name)
        return row[at] if at is not None and at < len(row) else ""

    if len(row) != len(columns) or not rules.text_ok(line):
        return _BadLine(number, f"{name}: expected {len(columns)} UTF-8 columns, got {len(row)}")
    try:
        key = unquote_plus(column("Key"), errors="strict")
    except UnicodeDecodeError:
        quoted = rules.quote(column("Key"))
        return _BadLine(number, f"{name}: Key {quoted} does not URL-decode to UTF-8 text")
    bucket = column("Bucket")
    after = str(number)
    if column("IsLatest").lower() == "false":
        return _Entry(index, after, key, None, "old_version")
    if column("IsDeleteMarker").lower() == "true":
        return _Entry(index, after, key, None, "delete_marker")
    if not bucket or not key:
        return _BadLine(number, f"{name}: Bucket or Key is empty")
    size_text = column("Size")
    if size_text and not (size_text.isascii() and size_text.isdigit()):
        return _BadLine(number, f"{name}: Size {rules.quote(size_text)} is not a number")
    modified: datetime | None = None
    if column("LastModifiedDate"):
        try:
            modified = datetime.fromisoformat(column("LastModifiedDate"))
        except ValueError:
            return _BadLine(number, f"{name}: LastModifiedDate is not ISO 8601")
    if key.endswith("/"):
        return _Entry(index, after, key, None, "folder")
    ref = s3_ref(bucket, key)
    try:
        parsed = storage.parse_reference(ref, settings)
    except ScanFailed as exc:
        if exc.code is ErrorCode.REFUSED_REFERENCE and ".." not in key.split("/"):
            return _Entry(index, after, key, None, "outside_allow_list")
        log.warning("backfill_key_skipped", ref=ref, reason=exc.message)
        return _Entry(index, after, key, None, "bad_key")
    obj = StoredObject(
        ref,
        key,
        column("ETag").strip('"'),
        int(size_text) if size_text else -1,
        modified,
        str(parsed),
    )
    return _Entry(index, after, key, obj)


# ---------------------------------------------------------------------------------------
# Reading: S3 calls with retries, streams line by line


def _call(what: str, retry: Retry, request: Callable[[], T]) -> T:
    """`request()`, with transient S3 failures retried (s3.checked); BackfillError otherwise."""
    try:
        return s3.checked(what, request, retry)
    except s3.Failed as exc:
        raise BackfillError(str(exc)) from None


def _lines(where: str, opener: Opener, skip: int, retry: Retry) -> Iterator[tuple[int, str | None]]:
    """(number, line) for every line after the first `skip`; None for an over-long line.

    A stream that breaks off is opened again where it stopped (at that byte; a gzip
    stream is read again from its start up to it). Failures in a row without a line read
    in between are limited by `retry`.
    """
    errors = s3.stream_errors()
    number = 0  # lines read so far, skipped or handed out
    offset = 0  # bytes (of the unzipped text) they took
    compressed: bool | None = None  # known once the stream has been opened
    failures, number_at_failure = 0, -1
    while True:
        raw = opener(offset if compressed is False else 0)
        try:
            if compressed is None:
                compressed = raw.peek(2)[:2] == _GZIP_MAGIC
            stream = _unzipped(raw)
            if compressed and offset:
                _discard(stream, offset)
            while True:
                line = stream.readline(MAX_LINE + 1)
                if not line:
                    return
                size = len(line)
                text: str | None = None
                if len(line) > MAX_LINE and not line.endswith(b"\n"):
                    while line and not line.endswith(b"\n"):
                        line = stream.readline(1 << 16)
                        size += len(line)
                else:
                    # surrogateescape: a line that is not UTF-8 becomes a bad line, not a
                    # failed run.
                    text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
                    if number == 0:
                        # Notepad and Excel's "CSV UTF-8" start a file with a byte-order mark;
                        # it belongs to no reference (manifest.json is read as utf-8-sig too).
                        text = text.removeprefix(_BOM)
                number, offset = number + 1, offset + size
                if number > skip:
                    yield number, text
        except errors as exc:
            failures = failures + 1 if number == number_at_failure else 1
            number_at_failure = number
            if failures >= retry.attempts:
                raise BackfillError(
                    f"{where}: reading failed {failures} times at line {number + 1}: {exc}"
                ) from None
            log.warning("backfill_manifest_retry", where=where, line=number + 1, error=str(exc))
            retry.pause(failures)
        finally:
            raw.close()


_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"


def _unzipped(raw: io.BufferedReader) -> IO[bytes]:
    """The stream's bytes, gunzipped when it starts with gzip's magic."""
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def _discard(stream: IO[bytes], count: int) -> None:
    while count:
        chunk = stream.read(min(count, 1 << 20))
        if not chunk:
            raise EOFError("the stream is shorter than when it was read before")
        count -= len(chunk)
