"""Which objects a run has enqueued, so that an object its manifest names twice gets one job
and one output line (docs/backfill.md, *Objects named twice*).

An object's identity is what the workers' reference parser makes of its reference
(`str(storage.parse_reference(ref))`): `s3://bucket/key` with the key percent-decoded, or
`file://` and the resolved path. Two spellings are one object exactly when the parser reads
them as one; S3 keys are otherwise opaque (`dir/./k` is not `dir/k`).

The set lives in Redis beside the run's state, written in the transaction that enqueues the
objects' jobs and moves the listing position past them: after a crash either an object is
enqueued and marked, or neither, and `resume` on any machine sees the same set. It is compact,
because at 10^8 objects every byte per object counts: SHA-256 of the identity, whose first
BUCKET_BITS bits pick one of 2^BUCKET_BITS hashes (`qrw:backfill:<name>:seen:<bucket>`) and whose
next FIELD_BYTES bytes are a field (empty value) of that hash. Each hash stays a compact
listpack (up to Redis's `hash-max-listpack-entries`, 512 by default: about 4 x 10^8 objects a
run), so an object costs about its field's bytes plus a few: 14.6 bytes, 1.4 GiB at 10^8
objects (`python -m worker.bench.backfill --only dedup`). Two identities that share a bucket
and a field (84 bits: a chance of about 3 x 10^-10 in a run of 10^8 objects) would be taken
for one object.

The set is needed only while the listing is read: the runner clears it once every object is
enqueued (or the run is cancelled).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import redis

from worker.queue import names

BUCKET_BITS = 20
FIELD_BYTES = 8
# One command for a whole transaction's objects: as 640 HEXISTS or HSET commands, packing
# and parsing them cost the driver more than the lookups cost Redis.
_CONTAINS = """
local found = {}
for i, key in ipairs(KEYS) do found[i] = redis.call('HEXISTS', key, ARGV[i]) end
return found
"""
_ADD = """
for i, key in ipairs(KEYS) do redis.call('HSET', key, ARGV[i], '') end
return #KEYS
"""
# Hashes cleared per round trip, and keys asked of SCAN per call, when the set is dropped.
_CLEAR_CHUNK = 1000


def mark(identity: str, bucket_bits: int = BUCKET_BITS) -> tuple[int, bytes]:
    """(bucket, field) of an object's identity."""
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).digest()
    head = int.from_bytes(digest[:4], "big")
    start = (bucket_bits + 7) // 8
    return head >> (32 - bucket_bits), digest[start : start + FIELD_BYTES]


class Seen:
    """The run's set of enqueued objects, by their marks."""

    def __init__(self, connection: redis.Redis, name: str, bucket_bits: int = BUCKET_BITS) -> None:
        if not 1 <= bucket_bits <= 32:
            raise ValueError(f"bucket_bits is 1 to 32, got {bucket_bits}")
        self.connection = connection
        self.prefix = names.backfill_seen_prefix(name)
        self.bucket_bits = bucket_bits
        self._digits = (bucket_bits + 3) // 4

    def mark(self, identity: str) -> tuple[int, bytes]:
        return mark(identity, self.bucket_bits)

    def key(self, bucket: int) -> str:
        return f"{self.prefix}{bucket:0{self._digits}x}"

    def contains(self, marks: Sequence[tuple[int, bytes]]) -> list[bool]:
        """Which marks are in the set: one round trip for all of them."""
        if not marks:
            return []
        keys = [self.key(bucket) for bucket, _ in marks]
        found = self.connection.eval(_CONTAINS, len(keys), *keys, *(f for _, f in marks))
        return [bool(value) for value in found]

    def add(self, pipe: redis.client.Pipeline, marks: Sequence[tuple[int, bytes]]) -> None:
        """Queue the marks' HSETs in the caller's transaction (MULTI already issued)."""
        if marks:
            keys = [self.key(bucket) for bucket, _ in marks]
            pipe.eval(_ADD, len(keys), *keys, *(f for _, f in marks))

    def clear(self) -> int:
        """Drop the whole set; returns the hashes removed. Idempotent."""
        removed = 0
        batch: list[bytes] = []
        for key in self.connection.scan_iter(match=f"{self.prefix}*", count=_CLEAR_CHUNK):
            batch.append(key)
            if len(batch) >= _CLEAR_CHUNK:
                removed += int(self.connection.unlink(*batch))
                batch = []
        if batch:
            removed += int(self.connection.unlink(*batch))
        return removed
