"""A run's state in Redis: one hash per run, so `resume` can continue it on any machine.

The hash `qrw:backfill:<name>` (worker/queue/names.py) holds:

- `state`: running, paused, done, cancelled or failed (`RunState`);
- `spec`: what the run reads and how (source, filters, options, output URL), JSON;
- `position`: where the listing stands (worker.backfill.sources.Position as JSON; empty
  before the first job), written in the same transaction as the job it advanced past;
- counters (`COUNTERS`): `listed` (objects the listing went past: taken or skipped),
  `skipped`, `enqueued` (objects in enqueued jobs), `jobs` (jobs enqueued), `done` (jobs
  collected), `failed` (collected jobs whose result was not ok), `objects_ok`,
  `objects_failed` (output lines), `parts` (the next part's number), `cancelled` (objects
  taken off the queue by `cancel`), `bad_lines` (manifest lines that are not references);
- `skipped_by` ({reason: objects}; `duplicate`: objects a manifest named again) and
  `bad_line_list` (the first sources.BAD_LINES_KEPT [line number, reason] pairs), JSON;
- `listing_done`: "1" once the listing has ended and its counts are stored (a resume does
  not read it again);
- `created_at`, `started_at`, `finished_at` (ISO 8601, UTC), `error` (why it failed).

The pool's metrics (worker/metrics.py) read these field names: extend, never rename.

One process drives a run at a time: the one holding the lease `qrw:backfill:<name>:lease`,
a key with a TTL that its holder renews (`Lease`); a driver that dies stops renewing and
another can take over once the lease lapses. Each renewal is also noted in
`qrw:backfill:<name>:driver` (`token`, `seen_at`, `released_at` on a clean exit), which
outlives the lease: `qrw backfill status` says from it since when no process drives a run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis
import structlog

from worker.backfill import RUN_NAME, BackfillError, Filters, Options, SourceSpec
from worker.queue import names

log = structlog.get_logger("worker.backfill")


class RunState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


COUNTERS = (
    "listed",
    "skipped",
    "enqueued",
    "jobs",
    "done",
    "failed",
    "objects_ok",
    "objects_failed",
    "parts",
    "cancelled",
    "bad_lines",
)
# A driver renews its lease every LEASE_RENEW_S; a dead driver's lease lapses after LEASE_S.
LEASE_S = 15.0
LEASE_RENEW_S = 5.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def check_name(name: str) -> str:
    if not RUN_NAME.fullmatch(name):
        raise BackfillError(
            f"a run name is 1 to 64 letters, digits, '-' or '_' (it becomes part of Redis keys "
            f"and job ids), not {name[:80]!r}"
        )
    return name


# -- the spec: what a run reads and how, as JSON -----------------------------------------


def spec_json(source: SourceSpec, filters: Filters, options: Options, out: str) -> str:
    return json.dumps(
        {
            "source": {"prefixes": list(source.prefixes), "manifest": source.manifest},
            "filters": {
                "include": list(filters.include),
                "modified_after": (
                    filters.modified_after.isoformat() if filters.modified_after else None
                ),
                "max_bytes": filters.max_bytes,
                "limit": filters.limit,
                "shard": list(filters.shard) if filters.shard else None,
            },
            "options": {
                "batch": options.batch,
                "max_in_flight": options.max_in_flight,
                "rate": options.rate,
                "queue": options.queue,
                "want": options.want,
                "deadline_ms": options.deadline_ms,
            },
            "out": out,
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True, slots=True)
class Spec:
    source: SourceSpec
    filters: Filters
    options: Options
    out: str

    @classmethod
    def from_json(cls, text: str) -> Spec:
        raw = json.loads(text)
        source, filters, options = raw["source"], raw["filters"], raw["options"]
        after = filters.get("modified_after")
        shard = filters.get("shard")
        return cls(
            SourceSpec(tuple(source.get("prefixes") or ()), source.get("manifest")),
            Filters(
                include=tuple(filters.get("include") or ()),
                modified_after=datetime.fromisoformat(after) if after else None,
                max_bytes=filters.get("max_bytes"),
                limit=filters.get("limit"),
                shard=(int(shard[0]), int(shard[1])) if shard else None,
            ),
            Options(
                batch=int(options["batch"]),
                max_in_flight=int(options["max_in_flight"]),
                rate=options.get("rate"),
                queue=str(options["queue"]),
                want=options.get("want"),
                deadline_ms=options.get("deadline_ms"),
            ),
            str(raw["out"]),
        )

    def to_json(self) -> str:
        return spec_json(self.source, self.filters, self.options, self.out)


# -- a snapshot of the hash -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    state: RunState
    spec: Spec
    position: str  # Position JSON, "" before the first job
    counts: dict[str, int]
    skipped_by: dict[str, int] = field(default_factory=dict)
    bad_line_list: list[tuple[int, str]] = field(default_factory=list)
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    in_flight: int = 0  # jobs of the run in Redis now (queued, running, or result uncollected)
    driver: str | None = None  # who holds the lease and lives, if anyone
    listing_done: bool = False  # listed to the end, its counts stored
    last_driver: str | None = None  # the lease's last holder (Lease.token)
    # When the run, not finished, was last seen driven (its last driver's last renewal or
    # clean exit; created_at when none ever drove it); None while a live process drives it.
    driver_gone_since: str | None = None

    @property
    def finished(self) -> bool:
        """The run is over and its summary written (a cancel still collecting is not)."""
        return self.finished_at is not None

    @property
    def hint(self) -> str | None:
        """What to do about a run that no process drives; None when one does, or it ended."""
        if self.driver_gone_since is None:
            return None
        last = f", the last one {self.last_driver}," if self.last_driver else ""
        return (
            f"no backfill process drives it{last} since {self.driver_gone_since}: "
            f"`qrw backfill resume {self.name}` continues it"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "finished": self.finished,
            "source": {
                "prefixes": list(self.spec.source.prefixes),
                "manifest": self.spec.source.manifest,
            },
            "out": self.spec.out,
            "queue": self.spec.options.queue,
            "batch": self.spec.options.batch,
            "max_in_flight": self.spec.options.max_in_flight,
            "in_flight": self.in_flight,
            "driver": self.driver,
            "last_driver": self.last_driver,
            "driver_gone_since": self.driver_gone_since,
            "hint": self.hint,
            **self.counts,
            "skipped_by": self.skipped_by,
            "bad_line_list": [list(entry) for entry in self.bad_line_list],
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }


def _text(fields: Mapping[bytes, bytes], name: str) -> str | None:
    value = fields.get(name.encode())
    return value.decode() if value else None


def parse(
    name: str,
    fields: Mapping[bytes, bytes],
    in_flight: int = 0,
    driver: str | None = None,
    last: Mapping[bytes, bytes] | None = None,
) -> Run:
    """A Run from the hash's fields (HGETALL), with the lease's live holder (`driver`) and
    the run's driver record (`last`: HGETALL of its driver key)."""
    counts = {counter: int(fields.get(counter.encode(), b"0")) for counter in COUNTERS}
    last = last or {}
    last_driver = _text(last, "token")
    gone_since = None
    if driver is None and not _text(fields, "finished_at"):
        gone_since = (
            _text(last, "released_at") or _text(last, "seen_at") or _text(fields, "created_at")
        )
    return Run(
        name=name,
        state=RunState(_text(fields, "state") or RunState.FAILED),
        spec=Spec.from_json(_text(fields, "spec") or "{}"),
        position=_text(fields, "position") or "",
        counts=counts,
        skipped_by=json.loads(_text(fields, "skipped_by") or "{}"),
        bad_line_list=[
            (int(n), str(r)) for n, r in json.loads(_text(fields, "bad_line_list") or "[]")
        ],
        created_at=_text(fields, "created_at"),
        started_at=_text(fields, "started_at"),
        finished_at=_text(fields, "finished_at"),
        error=_text(fields, "error"),
        in_flight=in_flight,
        driver=driver,
        listing_done=_text(fields, "listing_done") == "1",
        last_driver=last_driver,
        driver_gone_since=gone_since,
    )


def create(connection: redis.Redis, name: str, spec: Spec, *, retry_of: str | None = None) -> None:
    """The run's hash, and its name in `qrw:backfills`; refuses a name already used."""
    check_name(name)
    key = names.backfill_key(name)
    with connection.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        if pipe.exists(key):
            raise BackfillError(
                f"a backfill named {name!r} exists already: see `qrw backfill status {name}`, "
                f"or pick another name"
            )
        pipe.multi()
        pipe.hset(
            key,
            mapping={
                "state": RunState.RUNNING.value,
                "spec": spec.to_json(),
                "position": "",
                **{counter: 0 for counter in COUNTERS},
                "skipped_by": "{}",
                "bad_line_list": "[]",
                "created_at": now_iso(),
                **({"retry_of": retry_of} if retry_of else {}),
            },
        )
        pipe.sadd(names.BACKFILLS, name)
        try:
            pipe.execute()
        except redis.WatchError:
            raise BackfillError(
                f"a backfill named {name!r} was just created by another process"
            ) from None


def load(connection: redis.Redis, name: str) -> Run:
    check_name(name)
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(names.backfill_key(name))
        pipe.hlen(names.backfill_inflight_key(name))
        pipe.get(names.backfill_lease_key(name))
        pipe.hgetall(names.backfill_driver_key(name))
        fields, in_flight, holder, last = pipe.execute()
    if not fields:
        raise BackfillError(f"no backfill named {name!r} (see `qrw backfill status`)")
    driver = holder.decode() if holder else None
    if driver is not None and local_process(driver) is False:
        driver = None  # killed on this machine: its lease only counts down
    return parse(name, fields, int(in_flight), driver, last)


def run_names(connection: redis.Redis) -> list[str]:
    return sorted(member.decode() for member in connection.smembers(names.BACKFILLS) or ())


# The states each request may come from. A finished run never starts again (retry makes a
# new run instead); resume also takes a running run whose driver died, and a failed one.
_FROM: dict[RunState, frozenset[RunState]] = {
    RunState.PAUSED: frozenset({RunState.RUNNING}),
    RunState.RUNNING: frozenset({RunState.PAUSED, RunState.RUNNING, RunState.FAILED}),
    RunState.CANCELLED: frozenset({RunState.RUNNING, RunState.PAUSED, RunState.FAILED}),
}


def request(connection: redis.Redis, name: str, target: RunState) -> Run:
    """Move the run to `target` (pause, resume, cancel), atomically against the driver's
    own writes; returns the run as it was before. BackfillError when the move makes no
    sense (resuming a finished run)."""
    key = names.backfill_key(name)
    while True:
        with connection.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            before = load(connection, name)
            allowed = _FROM.get(target, frozenset())
            if before.finished or before.state not in allowed:
                raise BackfillError(
                    f"backfill {name!r} is {before.state.value}"
                    f"{' (finished)' if before.finished else ''}: it cannot be "
                    f"{_VERB[target]}"
                )
            pipe.multi()
            pipe.hset(key, "state", target.value)
            if target == RunState.RUNNING:
                pipe.hdel(key, "error")
            try:
                pipe.execute()
            except redis.WatchError:
                continue  # the driver wrote in between: read again
            return before


_VERB = {
    RunState.RUNNING: "resumed",
    RunState.PAUSED: "paused",
    RunState.CANCELLED: "cancelled",
    RunState.FAILED: "failed",
    RunState.DONE: "done",
}


# -- the lease ------------------------------------------------------------------------------


class LeaseLost(BackfillError):
    """Another process drives the run now: it holds the lease."""


class Lease:
    """The right to drive one run: `qrw:backfill:<name>:lease` holds our token with a TTL.

    A thread renews it every LEASE_RENEW_S, so a long S3 listing page or a slow part
    upload never lets it lapse while this process lives. Every write of the driver is a
    transaction that WATCHes the lease key and checks the token (`held_in`), so a driver
    that lost its lease (paused for longer than LEASE_S) enqueues and trims nothing.
    """

    def __init__(self, connection: redis.Redis, name: str) -> None:
        self.connection = connection
        self.name = name
        self.key = names.backfill_lease_key(name)
        self.record_key = names.backfill_driver_key(name)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost_to: str | None = None  # the driver that took the lease from us, once seen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; False when another live driver does."""
        taken = self.connection.set(self.key, self.token, nx=True, px=int(LEASE_S * 1000))
        if not taken:
            return False
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.delete(self.record_key)  # the last driver's released_at goes with it
            pipe.hset(self.record_key, mapping={"token": self.token, "seen_at": now_iso()})
            pipe.execute()
        self._thread = threading.Thread(target=self._renew_loop, name="backfill-lease", daemon=True)
        self._thread.start()
        return True

    def holder(self) -> str | None:
        raw = self.connection.get(self.key)
        return raw.decode() if raw else None

    def held_in(self, pipe: redis.client.Pipeline) -> bool:
        """Inside a WATCH (the caller watched self.key): is the lease still ours?"""
        raw = pipe.get(self.key)
        return raw is not None and raw.decode() == self.token

    def hold_in(self, pipe: redis.client.Pipeline) -> None:
        """Inside a WATCH of self.key, before MULTI: LeaseLost when another process holds
        the lease. A lease that lapsed with nobody taking it (Redis away for longer than
        LEASE_S) is still ours to drive with: the caller's transaction takes it back with
        `keep_in`, and the WATCH fails its EXEC if another driver took it in between."""
        raw = pipe.get(self.key)
        if raw is not None and raw.decode() != self.token:
            raise self.lost(raw.decode())

    def keep_in(self, pipe: redis.client.Pipeline) -> None:
        """Inside MULTI, after `hold_in`: the lease is ours for another LEASE_S."""
        pipe.set(self.key, self.token, px=int(LEASE_S * 1000))

    def lost(self, holder: str) -> LeaseLost:
        self.lost_to = holder
        return LeaseLost(f"backfill {self.name!r}: another process took over the run: {holder}")

    def _renew_loop(self) -> None:
        while not self._stop.wait(LEASE_RENEW_S):
            try:
                if not self._renew():
                    holder = self.holder()
                    if holder is None:
                        continue  # released by its taker at once: ours again at the next turn
                    log.error("backfill_lease_lost", key=self.key, holder=holder)
                    self.lost_to = holder
                    return
            except redis.RedisError as exc:
                # Redis restarting: the key (AOF) or its absence says who holds it after.
                log.warning("backfill_lease_renew_failed", key=self.key, error=repr(exc)[:200])

    def _renew(self) -> bool:
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.watch(self.key)
            current = pipe.get(self.key)
            if current is not None and current.decode() != self.token:
                return False
            pipe.multi()
            # Absent: it lapsed while Redis was away and nobody took it: ours again.
            pipe.set(self.key, self.token, px=int(LEASE_S * 1000))
            pipe.hset(self.record_key, mapping={"token": self.token, "seen_at": now_iso()})
            try:
                pipe.execute()
            except redis.WatchError:
                return self.holder() == self.token
            return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LEASE_RENEW_S + 1)
        try:
            with self.connection.pipeline(transaction=True) as pipe:
                pipe.watch(self.key)
                if self.held_in(pipe):
                    pipe.multi()
                    pipe.delete(self.key)
                    pipe.hset(self.record_key, "released_at", now_iso())
                    pipe.execute()
        except redis.RedisError:
            pass  # it lapses on its own


def local_process(holder: str) -> bool | None:
    """Whether the lease holder's process lives, when it ran on this machine; None when
    it ran elsewhere (or the token is not ours to read)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def driver_alive(connection: redis.Redis, name: str) -> bool:
    """Whether a live process drives the run: its lease is held and, for a process on
    another machine, renewed within LEASE_RENEW_S (a dead one's only counts down)."""
    key = names.backfill_lease_key(name)
    raw = connection.get(key)
    if raw is None:
        return False
    alive = local_process(raw.decode())
    if alive is not None:
        return alive
    before = connection.pttl(key)
    until = time.monotonic() + LEASE_RENEW_S + 1
    while time.monotonic() < until:
        time.sleep(0.25)
        now = connection.pttl(key)
        if now < 0:
            return False
        if now > before + 500:
            return True  # renewed
        before = now
    return False
