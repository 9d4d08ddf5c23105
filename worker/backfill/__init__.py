"""Backfills: re-reading an archive of stored invoices through the same queue and workers.

A backfill is a producer plus a results collector (docs/backfill.md). The pieces:
- `sources`: what to read: S3 prefixes listed with ListObjectsV2, or a manifest (plain
  lines or an S3 Inventory), filtered, sharded and resumable from a `Position`;
- `state`: the run's state in Redis (worker/queue/names.py: backfill_*), so any machine can
  resume it;
- `runner`: enqueues jobs with ids derived from the run and the objects, at most
  `max_in_flight` at once, and drains results into the output;
- `seen`: the objects a run has enqueued, so that a manifest naming one twice reads it once;
- `output`: JSONL.gz parts written atomically, `summary.json` and `index.csv`;
- `report`: the numbers of a run.

The types every piece shares are defined here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Run names become Redis keys and job ids: the job id alphabet, kept short.
RUN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The skip reason of an object a manifest named before (worker.backfill.seen): counted in the
# run's skipped_by, and as `duplicates` in its report.
DUPLICATE = "duplicate"
# The reason a manifest line that is not an object is counted under in a run's skipped_by: a
# line, not an object, so not in its `skipped` total (Counts.bad_lines has the numbers).
BAD_LINE = "bad_line"


class BackfillError(Exception):
    """A problem the user must fix before the run can go on; one line, no traceback."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object of the archive: what a job reads and what its output line names."""

    ref: str  # s3://bucket/key or file:///path: what the job's payload names
    key: str  # the S3 key, or the file path
    etag: str  # S3's ETag without quotes; for a file, "<size>-<mtime_ns>"
    size: int  # bytes; -1 when a manifest line does not say
    last_modified: datetime | None = None
    # What the workers' reference parser makes of `ref` (storage.Reference as text): two
    # spellings of one object share it. Set by the listing; "" where nobody needs it.
    identity: str = field(default="", compare=False)

    def to_json(self) -> list[Any]:
        return [self.ref, self.key, self.etag, self.size]

    @classmethod
    def from_json(cls, value: list[Any]) -> StoredObject:
        ref, key, etag, size = value
        return cls(str(ref), str(key), str(etag), int(size))


@dataclass(frozen=True, slots=True)
class Filters:
    include: tuple[str, ...] = ()  # shell-style globs on the key's file name; any may match
    modified_after: datetime | None = None
    max_bytes: int | None = None
    limit: int | None = None  # objects taken, after the other filters
    shard: tuple[int, int] | None = None  # (i, n): this process takes objects with hash % n == i


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Exactly one kind: S3 prefixes (`s3://bucket/prefix/`, several allowed) or one
    manifest (a local path or an s3:// object; plain lines or an Inventory manifest.json)."""

    prefixes: tuple[str, ...] = ()
    manifest: str | None = None


@dataclass(frozen=True, slots=True)
class Options:
    batch: int = 10  # images per job
    max_in_flight: int = 64  # backfill jobs queued or running at once
    rate: float | None = None  # images per second
    queue: str = "qr-backfill"
    want: str | None = None
    deadline_ms: int | None = None


@dataclass(slots=True)
class Counts:
    """Why objects were skipped, and lines of a manifest that are not references."""

    skipped: dict[str, int] = field(default_factory=dict)  # reason -> objects
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
