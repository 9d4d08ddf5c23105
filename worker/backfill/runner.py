"""Driving a backfill: enqueue jobs from the listing, at most `max_in_flight` at once, and
drain their results into the output, so that every object gets exactly one output line
whatever dies on the way (docs/backfill.md).

The two halves of the loop, each one transaction that WATCHes the lease and the run's
state hash (so a driver that lost its lease, or a run paused or cancelled a moment ago,
writes nothing), and each idempotent when Redis drops the connection after EXEC:

- enqueue: the job hash, its id on the queue, the job's objects in the in-flight hash,
  and the listing position after them with the counts, together. After a crash either the
  batch is enqueued and the position is past it, or neither.
- collect: LRANGE the first results of the run's reply list; one output line per object
  for each result whose job is still in flight (the others were written already); the
  part file written whole; then LTRIM those results, HDEL their jobs, and count the part,
  together. A crash between the part and the transaction writes the same part again.

Job ids are derived from the run and the objects (their refs and ETags), so the same batch
always has the same id; results are delivered once per enqueue (publish.lua), and a
result whose job is no longer in flight is dropped.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

from worker import rules
from worker.backfill import (
    BAD_LINE,
    DUPLICATE,
    BackfillError,
    Counts,
    Filters,
    Options,
    SourceSpec,
    StoredObject,
    output,
    report,
    sources,
)
from worker.backfill import state as states
from worker.backfill.progress import Display
from worker.backfill.seen import Seen
from worker.backfill.state import (
    LEASE_S,
    Lease,
    LeaseLost,
    Run,
    RunState,
    Spec,
    now_iso,
)
from worker.backoff import backoff_s
from worker.queue import names
from worker.queue.names import JOB_FUNCTION
from worker.queue.payloads import MAX_BATCH
from worker.queue.producer import job_hash, rq_timestamp
from worker.queue.replies import TRANSIENT
from worker.settings import Settings

log = structlog.get_logger("worker.backfill")

# A run's results are collected within seconds; the result key and its delivery token only
# need to outlive a job's reruns after a worker loss (a few recovery intervals), and a
# backfill writing thousands of results a minute must not keep each for QRW_RESULT_TTL.
RESULT_TTL_S = 600
# RQ keeps a finished job's hash (and its own results) this long, instead of its default
# 500 s: at hundreds of jobs a second those hashes would be most of Redis's memory. The
# result itself is in the reply list by then.
RQ_RESULT_TTL_S = 60
# Results per part at most; a part is also written when results have waited PART_EVERY_S.
COLLECT_MAX = 1000
PART_EVERY_S = 2.0
IDLE_S = 0.1
# Jobs whose hash and result are both gone (a driver away for longer than the reply list's
# TTL) are looked for at start and every SWEEP_EVERY_S, and enqueued again.
SWEEP_EVERY_S = 60.0
# RQ's statuses of a job that has run to its end: its result is published by then.
_ENDED_STATUSES = (b"finished", b"failed", b"stopped", b"canceled")
# How long a driver that gave up waits for Redis to take the reason (then exits anyway).
RECORD_FOR_S = 30.0
# Jobs enqueued in one transaction at most: a quarter of the in-flight jobs frees up at each
# collect, and one round of Redis calls for all of them, not five per job, is what keeps the
# backfill's own CPU (taken from the workers' cores) small.
ENQUEUE_MAX_JOBS = 64
# Time a job needs beyond its images: fetch, queue bookkeeping.
_JOB_SLACK_S = 30


def _away(exc: Exception) -> str:
    if isinstance(exc, redis.exceptions.OutOfMemoryError | redis.exceptions.ExecAbortError):
        return "full (at its maxmemory)"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "read-only (a replica)"
    return "unreachable"


def job_id(name: str, objects: list[StoredObject]) -> str:
    """`bf-` and 40 hex digits of SHA-256 over the run and each object's ref and ETag: the
    same batch always gets the same id, a changed object (new ETag) another."""
    digest = hashlib.sha256(name.encode())
    for obj in objects:
        digest.update(b"\0" + obj.ref.encode("utf-8", "surrogatepass"))
        digest.update(b"\0" + obj.etag.encode("utf-8", "surrogatepass"))
    return f"bf-{digest.hexdigest()[:40]}"


def job_payload(name: str, objects: list[StoredObject], options: Options) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "images": [obj.ref for obj in objects],
        "reply_to": names.backfill_reply_key(name),
        "request_id": name,
        "result_ttl": RESULT_TTL_S,
        "stream": False,
    }
    if options.want is not None:
        payload["want"] = options.want
    if options.deadline_ms is not None:
        payload["deadline_ms"] = options.deadline_ms
    return payload


def _objects(batches: list[list[_Taken]]) -> Iterator[list[StoredObject]]:
    for batch in batches:
        yield [taken.obj for taken in batch]


def job_timeout(settings: Settings, options: Options) -> int:
    """The job's hard limit: its deadline when it has one, else QRW_DEADLINE_MS per image
    (or QRW_JOB_TIMEOUT when there is no default deadline), plus slack."""
    if options.deadline_ms is not None:
        seconds = options.deadline_ms / 1000 + _JOB_SLACK_S
    elif settings.deadline_ms:
        seconds = options.batch * (settings.deadline_ms / 1000 + 2) + _JOB_SLACK_S
    else:
        seconds = max(settings.job_timeout, options.batch * 10)
    return int(min(rules.MAX_JOB_TIMEOUT_S, max(rules.MIN_JOB_TIMEOUT_S, math.ceil(seconds))))


# -- start -------------------------------------------------------------------------------------


def check(
    settings: Settings, spec: SourceSpec, filters: Filters, options: Options, out: str
) -> None:
    """Everything that can be known before a run starts; BackfillError, nothing written."""
    if not 1 <= options.batch <= MAX_BATCH:
        raise BackfillError(f"--batch must be 1 to {MAX_BATCH} images per job, got {options.batch}")
    if options.max_in_flight < 1:
        raise BackfillError(f"--max-in-flight must be 1 or more, got {options.max_in_flight}")
    if options.rate is not None and not (options.rate > 0 and math.isfinite(options.rate)):
        raise BackfillError(f"--rate must be a positive number of images/s, got {options.rate}")
    sources.check_filters(filters)
    sources.check_source(spec, settings)
    output.open_output(out, settings).check_writable(fresh=True)


def dry_run(
    settings: Settings, spec: SourceSpec, filters: Filters, options: Options, out: str
) -> sources.DryRun:
    """What `start` would take, counted, after the same checks (the output's included: a
    probe written and deleted); nothing enqueued, nothing recorded."""
    check(settings, spec, filters, options, out)
    return sources.dry_run(spec, filters, settings)


def start(
    connection: redis.Redis,
    settings: Settings,
    name: str,
    spec: SourceSpec,
    filters: Filters,
    options: Options,
    out: str,
) -> None:
    """Check everything, then create the run's state (refusing a name already used).
    Nothing is enqueued: `drive` does that."""
    states.check_name(name)
    check(settings, spec, filters, options, out)
    states.create(connection, name, Spec(spec, filters, options, out))
    log.info("backfill_created", run=name, out=out, source=spec.prefixes or spec.manifest)


def retry(connection: redis.Redis, settings: Settings, name: str, errors: list[str]) -> str:
    """A new run, `<name>-retry-<n>`, over the objects of `name`'s output lines that ended
    with one of `errors`. Its manifest (one TAB-separated line per object, with its ETag
    and size) is written next to the parts of `name`, its output in a folder beside them."""
    run = states.load(connection, name)
    if not run.finished:
        raise BackfillError(
            f"backfill {name!r} is {run.state.value} and not finished: retry its failures "
            "once it is done or cancelled"
        )
    wanted = set(errors)
    source_out = output.open_output(run.spec.out, settings)
    for n in range(1, 1000):
        retry_name = f"{name}-retry-{n}"
        if len(retry_name) > 64:
            raise BackfillError(f"{retry_name!r} is longer than a run name may be (64)")
        if not connection.exists(names.backfill_key(retry_name)):
            break
    else:
        raise BackfillError(f"backfill {name!r} has been retried 999 times")
    manifest_lines = []
    for line in source_out.iter_lines(below=run.counts["parts"]):
        error = line.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if not line.get("ok") and code in wanted:
            obj = StoredObject(
                str(line.get("image")),
                str(line.get("key")),
                str(line.get("etag", "")),
                int(line.get("size", -1)),
            )
            manifest_lines.append(sources.manifest_line(obj))
    if not manifest_lines:
        raise BackfillError(
            f"backfill {name!r} has no output lines with error {', '.join(sorted(wanted))}: "
            "nothing to retry"
        )
    base = run.spec.out.rstrip("/")
    out = f"{base}/{retry_name}/"
    manifest = _write_manifest(source_out, f"{retry_name}.manifest", manifest_lines)
    spec = SourceSpec(manifest=manifest)
    options = run.spec.options
    check(settings, spec, Filters(), options, out)
    states.create(connection, retry_name, Spec(spec, Filters(), options, out), retry_of=name)
    log.info("backfill_retry_created", run=retry_name, retry_of=name, objects=len(manifest_lines))
    return retry_name


def _write_manifest(out: output.Output, file_name: str, lines: list[str]) -> str:
    """Write the retry manifest beside the parts; returns how a source names it."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")
    out.write_file(file_name, data)
    return f"{out.url}{file_name}"


# -- drive -------------------------------------------------------------------------------------


def drive(connection: redis.Redis, settings: Settings, name: str, *, progress: bool) -> str:
    """Run the backfill until it is done, cancelled or failed; returns the final state.

    Takes the run's lease first (waiting out a crashed driver's, at most LEASE_S; at once
    when that driver was a dead process on this machine); BackfillError when another live
    process drives the run.
    """
    run = states.load(connection, name)
    if run.finished:
        if run.spec.source.manifest:
            Seen(connection, name).clear()  # left by a driver that died as it finished
        return run.state.value
    yield_cpu(settings.backfill_nice)
    lease = Lease(connection, name)
    if not _take_lease(connection, lease):
        holder = lease.holder()
        raise BackfillError(
            f"backfill {name!r} is being driven by {holder}: pause, resume and cancel reach it "
            "through Redis"
        )
    display = Display(name, live=progress)
    try:
        return _Driver(connection, settings, run, lease, display).loop()
    finally:
        display.close()
        lease.release()


def _stored_taken(run: Run) -> int:
    """Objects the run's stored position has taken."""
    return sources.Position.from_json(run.position).taken if run.position else 0


def yield_cpu(niceness: int) -> None:
    """Lower this process's CPU priority to `niceness` (never raise it: that needs root).

    Live traffic first: on the workers' cores the driver's CPU (listing, enqueue, writing
    parts) would otherwise come out of theirs; at 10 it runs in the time they leave idle,
    which is enough, since it spends a fraction of a millisecond per object. It never
    starves: the kernel still gives it a share (about a tenth of a contended core), so its
    lease is renewed in time."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness > current:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)


def _take_lease(connection: redis.Redis, lease: Lease) -> bool:
    until = time.monotonic() + LEASE_S + 2
    while True:
        if lease.acquire():
            return True
        holder = lease.holder()
        if holder and _dead_local(holder):
            # Its process is gone (kill -9 on this machine): take over without waiting.
            with connection.pipeline(transaction=True) as pipe:
                pipe.watch(lease.key)
                if (current := pipe.get(lease.key)) is not None and current.decode() == holder:
                    pipe.multi()
                    pipe.delete(lease.key)
                    with contextlib.suppress(redis.WatchError):
                        pipe.execute()
            continue
        if time.monotonic() >= until:
            return False
        time.sleep(0.5)


def _dead_local(holder: str) -> bool:
    return states.local_process(holder) is False


@dataclass(slots=True)
class _Taken:
    """An object from the listing with what must be stored with its position."""

    obj: StoredObject
    position: sources.Position
    skipped_by: dict[str, int]
    bad_lines: int  # how many of Counts.bad_lines (it only grows) came before the object


@dataclass(slots=True)
class _Bucket:
    """A token bucket of images: `rate` per second, bursts of one batch."""

    rate: float | None
    capacity: float
    tokens: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def take(self, amount: int) -> bool:
        if self.rate is None:
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens + 1e-9 < amount:
            return False
        self.tokens -= amount
        return True


class _Driver:
    def __init__(
        self,
        connection: redis.Redis,
        settings: Settings,
        run: Run,
        lease: Lease,
        display: Display,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.name = run.name
        self.spec = run.spec
        self.options = run.spec.options
        self.lease = lease
        self.display = display
        self.key = names.backfill_key(self.name)
        self.inflight_key = names.backfill_inflight_key(self.name)
        self.reply_key = names.backfill_reply_key(self.name)
        self.queue_key = names.rq_queue_key(self.options.queue)
        self.output = output.open_output(run.spec.out, settings)
        self.timeout = job_timeout(settings, self.options)
        self.listing: Iterator[tuple[StoredObject, sources.Position]] | None = None
        self.counts = Counts()
        self.base_skipped: dict[str, int] = {}
        self.base_bad: list[tuple[int, str]] = []
        self.exhausted = False
        self.counts_stored = False
        self.duplicates = 0  # objects skipped as DUPLICATE since this driver began
        # A manifest may name an object twice (a listing never does): those runs keep the
        # set of objects enqueued until their listing ends.
        self.seen = Seen(connection, self.name) if run.spec.source.manifest else None
        self.taken = 0  # objects the stored position has taken
        self.next_batch: list[_Taken] = []  # taken from the listing, not yet let through
        # Batches let through (by --max-in-flight and --rate) and not yet in Redis: sent
        # again, exactly these, after a failed transaction, so a lost EXEC reply is
        # recognised by the stored position.
        self.pending: list[list[_Taken]] = []
        self.bucket = _Bucket(
            self.options.rate, float(max(self.options.batch, self.options.rate or 0))
        )
        self.last_part = time.monotonic()
        self.last_sweep = 0.0
        # Results that waited in the reply list when this driver began (done while no driver
        # ran): written like any, but not counted in the rate, which would otherwise show
        # them as done in its first second (issue 17: an ETA of 4.9 s for 25 s of work).
        self.backlog = 0
        # The report and index rows of the parts this driver wrote: at the end only the
        # parts it did not write (before a resume) are read again.
        self.tally = report.Tally()
        self.spool = output.IndexSpool()

    # The loop -----------------------------------------------------------------------------

    def loop(self) -> str:
        failing_since: float | None = None
        attempt = 0
        patience = self.settings.backfill_redis_patience
        while True:
            if self.lease.lost_to is not None:
                raise self.lease.lost(self.lease.lost_to)
            try:
                final = self.step()
                failing_since, attempt = None, 0
            except redis.WatchError:
                continue  # a transaction raced a pause, a cancel or a takeover: read again
            except TRANSIENT as exc:
                # Ridden out, backing off, for QRW_BACKFILL_REDIS_PATIENCE: Redis restarting
                # or failing over, or full and refusing writes. Each write to Redis is one
                # transaction: a refused one left nothing there, and the next step reads the
                # state again and carries on from it.
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > patience:
                    return self.fail(
                        f"Redis was {_away(exc)} for {patience} s "
                        f"(QRW_BACKFILL_REDIS_PATIENCE), the last error: {exc}"
                    )
                log.warning(
                    "backfill_redis_retry",
                    run=self.name,
                    error=repr(exc)[:200],
                    failing_for_s=round(now - failing_since, 1),
                )
                time.sleep(backoff_s(attempt))
                attempt += 1
                continue
            except redis.RedisError as exc:
                # Nothing waiting mends (a command refused for another reason): the reason in
                # the run's state, not a traceback.
                return self.fail(f"Redis refused a command: {exc}")
            except LeaseLost:
                raise
            except BackfillError as exc:
                return self.fail(str(exc))
            except OSError as exc:  # the output's disk: full, gone, read-only
                return self.fail(f"writing the output {self.spec.out} failed: {exc}")
            if final is not None:
                return final

    def step(self) -> str | None:
        run = states.load(self.connection, self.name)
        stored_taken = _stored_taken(run)
        if self.listing is not None and stored_taken < self.taken:
            # Only this driver moves the stored position: one behind what it wrote is a
            # Redis that lost writes (a lagging replica promoted). The stored state is the
            # truth then; going on from the listing in memory ended a run 'done' with 28 of
            # its 40 objects never written. Start again from it, as a resumed run does.
            log.warning(
                "backfill_state_went_back",
                run=self.name,
                stored_taken=stored_taken,
                taken=self.taken,
            )
            self.listing = None
            # Replies it collected since may be gone with the writes: look at once.
            self.last_sweep = -math.inf
        if run.started_at is None or self.listing is None:
            self.begin(run)
            run = states.load(self.connection, self.name)
        self.display.update(run, self.exhausted)
        busy = False
        enqueuing = run.state == RunState.RUNNING and (self.holding or not self.exhausted)
        busy |= self.collect(run, force=not enqueuing)
        if time.monotonic() - self.last_sweep > SWEEP_EVERY_S:
            self.sweep(run)
        if enqueuing:
            busy |= self.fill(run.in_flight)
        ending = (run.state == RunState.RUNNING and self.exhausted and not self.holding) or (
            run.state == RunState.CANCELLED
        )
        if ending and not busy and self.drained():
            return self.finish(RunState.DONE if run.state == RunState.RUNNING else run.state)
        if not busy:
            time.sleep(IDLE_S if run.state != RunState.PAUSED else 0.5)
        return None

    def begin(self, run: Run) -> None:
        """(Re)start the listing from the stored position, with the stored counts."""
        position = sources.Position.from_json(run.position) if run.position else None
        self.counts = Counts()
        self.base_skipped = dict(run.skipped_by)
        self.base_bad = list(run.bad_line_list)
        self.pending = []
        self.next_batch = []
        self.exhausted = False
        self.counts_stored = False
        self.duplicates = 0
        self.taken = position.taken if position else 0
        self.backlog = int(self.connection.llen(self.reply_key))
        if run.listing_done:
            # Listed to the end and counted: listing the tail again would count its skips
            # twice, and its duplicates could no longer be told (the set is dropped).
            self.listing = iter(())
            self.exhausted = self.counts_stored = True
            self.forget_seen()
        else:
            self.listing = sources.iter_objects(
                self.spec.source, self.spec.filters, self.settings, position, self.counts
            )
        if run.started_at is None:
            self.connection.hsetnx(self.key, "started_at", now_iso())
        if not self.connection.scard(names.rq_queue_workers_key(self.options.queue)):
            # Not an error (workers may come later), but the usual cause of a run that waits.
            log.warning(
                "backfill_queue_unserved",
                run=self.name,
                queue=self.options.queue,
                hint="no worker serves this queue now: add it to QRW_QUEUES (after the live one)",
            )
        log.info(
            "backfill_driving",
            run=self.name,
            driver=self.lease.token,
            position=run.position or None,
            in_flight=run.in_flight,
        )

    # Enqueueing ---------------------------------------------------------------------------

    def take(self) -> list[_Taken]:
        assert self.listing is not None
        batch: list[_Taken] = []
        while len(batch) < self.options.batch:
            try:
                obj, position = next(self.listing)
            except StopIteration:
                self.exhausted = True
                break
            batch.append(
                _Taken(obj, position, dict(self.counts.skipped), len(self.counts.bad_lines))
            )
        return batch

    @property
    def holding(self) -> bool:
        """Objects taken from the listing and not yet enqueued."""
        return bool(self.pending or self.next_batch)

    def fill(self, in_flight: int) -> bool:
        enqueued = False
        while self.pending or in_flight < self.options.max_in_flight:
            if not self.pending:
                room = min(self.options.max_in_flight - in_flight, ENQUEUE_MAX_JOBS)
                while len(self.pending) < room:
                    if not self.next_batch:
                        self.next_batch = self.take()
                        if not self.next_batch:
                            break
                    if not self.bucket.take(len(self.next_batch)):
                        break
                    self.pending.append(self.next_batch)
                    self.next_batch = []
                if not self.pending:
                    break
            outcome = self.enqueue(self.pending)
            if outcome is None:
                break  # paused or cancelled meanwhile
            self.pending = []
            enqueued = True
            in_flight += outcome
        if self.exhausted and not self.holding and not self.counts_stored:
            self.store_counts()
            self.counts_stored = True
        return enqueued

    def counted(
        self, taken: int, skipped: dict[str, int], bad: list[tuple[int, str]]
    ) -> dict[str, str]:
        """The state's count fields for the listing at `taken` objects, with the skips and
        bad lines the listing met before them."""
        skipped_by = dict(self.base_skipped)
        for reason, number in skipped.items():
            skipped_by[reason] = skipped_by.get(reason, 0) + number
        bad_lines = skipped_by.get(BAD_LINE, 0)
        kept = (self.base_bad + bad)[: sources.BAD_LINES_KEPT]
        objects_skipped = sum(report.skipped_objects(skipped_by).values())
        return {
            # Objects the listing went past: taken (duplicates included) or skipped.
            "listed": str(taken + objects_skipped - skipped_by.get(DUPLICATE, 0)),
            "skipped": str(objects_skipped),
            "skipped_by": json.dumps(skipped_by, sort_keys=True),
            "bad_lines": str(bad_lines),
            "bad_line_list": json.dumps(kept),
        }

    def enqueue(self, batches: list[list[_Taken]]) -> int | None:
        """One job for each batch (less the objects the run has enqueued already), all in
        one transaction with their bookkeeping; returns how many went in: 0 when these
        batches were in Redis already (a resend after a lost EXEC reply) or held only
        duplicates, None when the run is no longer running."""
        last = batches[-1][-1]
        position = last.position.to_json()
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.watch(self.key, self.lease.key)
            current_state, stored_position = pipe.hmget(self.key, "state", "position")
            self.lease.hold_in(pipe)
            if stored_position is not None and stored_position.decode() == position:
                self.taken = last.position.taken
                return 0  # these batches went in; the reply to EXEC was lost
            if current_state is None or current_state.decode() != RunState.RUNNING:
                return None
            # Only this driver (the lease holder) writes the set, so it can be read outside
            # the transaction.
            jobs, marks, duplicates = self.fresh(batches)
            skipped = dict(last.skipped_by)
            total_duplicates = self.duplicates + duplicates
            if total_duplicates:
                skipped[DUPLICATE] = skipped.get(DUPLICATE, 0) + total_duplicates
            counted = self.counted(
                last.position.taken, skipped, self.counts.bad_lines[: last.bad_lines]
            )
            pipe.multi()
            self.lease.keep_in(pipe)
            now = rq_timestamp()
            for jid, objects in jobs:
                job_key = names.rq_job_key(jid)
                # A DEL first, as docs/protocol.md asks of a reused id: the same objects
                # enqueued again after their earlier job finished start from a clean hash.
                pipe.delete(job_key)
                pipe.hset(job_key, mapping=self.job_fields(objects, now))
                pipe.hset(
                    self.inflight_key,
                    jid,
                    json.dumps([obj.to_json() for obj in objects], separators=(",", ":")),
                )
            if jobs:
                pipe.rpush(self.queue_key, *(jid for jid, _ in jobs))
                pipe.sadd(names.RQ_QUEUES, self.queue_key)
                pipe.hincrby(self.key, "enqueued", sum(len(objects) for _, objects in jobs))
                pipe.hincrby(self.key, "jobs", len(jobs))
            if self.seen is not None:
                self.seen.add(pipe, marks)
            pipe.hset(self.key, mapping={"position": position, **counted})
            pipe.execute()
        self.taken = last.position.taken
        self.duplicates = total_duplicates
        if duplicates:
            log.info("backfill_duplicates_skipped", run=self.name, objects=duplicates)
        return len(jobs)

    def fresh(
        self, batches: list[list[_Taken]]
    ) -> tuple[list[tuple[str, list[StoredObject]]], list[tuple[int, bytes]], int]:
        """The jobs of `batches` without the objects enqueued before (in Redis's set or
        earlier in `batches`), the marks of those they take, and how many were left out."""
        if self.seen is None:
            return [(job_id(self.name, objects), objects) for objects in _objects(batches)], [], 0
        seen = self.seen
        marks = [seen.mark(taken.obj.identity or taken.obj.ref) for b in batches for taken in b]
        known = iter(zip(marks, seen.contains(marks), strict=True))
        taking: set[tuple[int, bytes]] = set()
        jobs: list[tuple[str, list[StoredObject]]] = []
        duplicates = 0
        for batch in batches:
            kept: list[StoredObject] = []
            for taken in batch:
                mark, there = next(known)
                if there or mark in taking:
                    duplicates += 1
                    continue
                taking.add(mark)
                kept.append(taken.obj)
            if kept:
                jobs.append((job_id(self.name, kept), kept))
        return jobs, list(taking), duplicates

    def job_fields(self, objects: list[StoredObject], now: str) -> dict[str, str]:
        """The RQ job hash of a backfill job over `objects`."""
        return job_hash(
            job_payload(self.name, objects, self.options),
            queue=self.options.queue,
            timeout=self.timeout,
            now=now,
            description=f"{JOB_FUNCTION}(backfill {self.name})",
            result_ttl=RQ_RESULT_TTL_S,
        )

    def drained(self) -> bool:
        """No job of the run in Redis and no result waiting: what finishing needs."""
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hlen(self.inflight_key)
            pipe.llen(self.reply_key)
            in_flight, waiting = pipe.execute()
        return in_flight == 0 and waiting == 0

    def store_counts(self) -> None:
        """The listing ended: the skips and bad lines after the last object taken."""
        skipped = dict(self.counts.skipped)
        if self.duplicates:
            skipped[DUPLICATE] = skipped.get(DUPLICATE, 0) + self.duplicates
        counted = self.counted(self.taken, skipped, self.counts.bad_lines)
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.watch(self.key, self.lease.key)
            self.lease.hold_in(pipe)
            pipe.multi()
            self.lease.keep_in(pipe)
            pipe.hset(self.key, mapping={**counted, "listing_done": "1"})
            pipe.execute()
        self.forget_seen()

    def forget_seen(self) -> None:
        """Drop the set of enqueued objects: nothing more is enqueued from the listing."""
        if self.seen is not None:
            removed = self.seen.clear()
            if removed:
                log.info("backfill_seen_dropped", run=self.name, hashes=removed)

    # Collecting ---------------------------------------------------------------------------

    def collect(self, run: Run, *, force: bool) -> bool:
        waiting = self.connection.llen(self.reply_key)
        if not waiting:
            self.last_part = time.monotonic()
            return False
        # Parts of many results (not one per job), yet collected before the queue runs
        # dry: a quarter of the in-flight jobs, or whatever waited PART_EVERY_S.
        target = min(COLLECT_MAX, max(1, self.options.max_in_flight // 4))
        if not force and waiting < target and time.monotonic() - self.last_part < PART_EVERY_S:
            return False
        count = min(waiting, COLLECT_MAX)
        raw = self.connection.lrange(self.reply_key, 0, count - 1)
        documents: list[dict[str, Any]] = []
        waiting_ids: set[int] = set()  # of the documents that waited for this driver
        for number, entry in enumerate(raw):
            try:
                document = json.loads(entry)
            except ValueError:
                log.error("backfill_result_unreadable", run=self.name, entry=entry[:200])
                continue
            if isinstance(document, dict):
                documents.append(document)
                if number < self.backlog:  # FIFO: the first ones are those that waited
                    waiting_ids.add(id(document))
        ids = list(dict.fromkeys(str(doc.get("job_id")) for doc in documents))
        held = (
            dict(zip(ids, self.connection.hmget(self.inflight_key, ids), strict=True))
            if ids
            else {}
        )
        lines: list[dict[str, Any]] = []
        taken: list[str] = []
        jobs_failed = objects_ok = objects_failed = dropped = waited = 0
        for document in documents:
            jid = str(document.get("job_id"))
            objects_json = held.pop(jid, None)
            if objects_json is None:
                dropped += 1  # written already (or another run's): exactly one line each
                continue
            objects = [StoredObject.from_json(value) for value in json.loads(objects_json)]
            job_lines = output.object_lines(document, objects)
            lines += job_lines
            taken.append(jid)
            jobs_failed += 0 if document.get("ok") else 1
            ok = sum(1 for line in job_lines if line.get("ok"))
            waited += len(job_lines) if id(document) in waiting_ids else 0
            objects_ok += ok
            objects_failed += len(job_lines) - ok
        seq = run.counts["parts"]
        if lines:
            self.output.write_part(seq, lines)
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.watch(self.key, self.lease.key)
            stored_parts = pipe.hget(self.key, "parts")
            self.lease.hold_in(pipe)
            if int(stored_parts or 0) != seq:
                raise redis.WatchError("the parts moved on: read again")
            pipe.multi()
            self.lease.keep_in(pipe)
            pipe.ltrim(self.reply_key, len(raw), -1)
            if taken:
                pipe.hdel(self.inflight_key, *taken)
                # The result is in the part now. Its delivery token (qrw:delivery:<id>,
                # ~100 bytes) stays for RESULT_TTL_S to turn a rerun into a no-op; the result
                # itself would hold ~3 KB a job for as long, so Redis would grow with the
                # rate instead of with --max-in-flight.
                pipe.delete(*(names.result_key(jid) for jid in taken))
                pipe.hincrby(self.key, "done", len(taken))
                pipe.hincrby(self.key, "failed", jobs_failed)
                pipe.hincrby(self.key, "objects_ok", objects_ok)
                pipe.hincrby(self.key, "objects_failed", objects_failed)
            if lines:
                pipe.hset(self.key, "parts", str(seq + 1))
            pipe.execute()
        if lines:
            self.spool.add(seq, lines)
            for line in lines:
                self.tally.add(line)
        self.last_part = time.monotonic()
        self.backlog = max(0, self.backlog - len(raw))
        self.display.collected(objects_ok + objects_failed - waited)
        if dropped:
            log.info("backfill_duplicates_dropped", run=self.name, results=dropped)
        return True

    def sweep(self, run: Run) -> None:
        """Jobs in flight that no reply will ever come for: their stored result collected,
        or, with none, the job enqueued again (once the run is cancelled, let go).

        - A job whose hash is gone: the driver was away for longer than the reply list
          lives (QRW_RESULT_TTL).
        - A job that has ended (its result published with its reply, atomically) and whose
          reply is not waiting: the reply was collected, then the run's state went back to
          one that still had the job in flight (a lagging replica promoted). Its output
          line went with the part the older state no longer counts, so it is collected or
          run again; without this the run waited for it for ever."""
        self.last_sweep = time.monotonic()
        ids = [jid.decode() for jid in self.connection.hkeys(self.inflight_key)]
        if not ids:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            for jid in ids:
                pipe.hget(names.rq_job_key(jid), "status")
            statuses = pipe.execute()
        missing = {jid for jid, status in zip(ids, statuses, strict=True) if status is None}
        ended = [
            jid for jid, status in zip(ids, statuses, strict=True) if status in _ENDED_STATUSES
        ]
        if not missing and not ended:
            return
        waiting = set()
        for entry in self.connection.lrange(self.reply_key, 0, -1):
            with contextlib.suppress(ValueError, AttributeError):
                waiting.add(str(json.loads(entry).get("job_id")))
        for jid in [*missing, *ended]:
            if jid in waiting:
                continue
            stored = self.connection.get(names.result_key(jid))
            if stored is not None:
                # The result outlived its reply: collect it from where it is stored.
                self.connection.rpush(self.reply_key, stored)
            else:
                # Nothing to collect (the collector deletes a written result; it expires):
                # the job runs again, as a new enqueue, whose one result is collected.
                self.requeue(jid, run.state)

    def requeue(self, jid: str, state: RunState) -> None:
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.watch(self.key, self.lease.key, self.inflight_key)
            self.lease.hold_in(pipe)
            held = pipe.hget(self.inflight_key, jid)
            status = pipe.hget(names.rq_job_key(jid), "status")
            if held is None or (status is not None and status not in _ENDED_STATUSES):
                return  # collected meanwhile, or queued or running again
            objects = [StoredObject.from_json(value) for value in json.loads(held)]
            pipe.multi()
            self.lease.keep_in(pipe)
            if state == RunState.CANCELLED:
                pipe.hdel(self.inflight_key, jid)
                pipe.hincrby(self.key, "cancelled", len(objects))
            else:
                pipe.hset(names.rq_job_key(jid), mapping=self.job_fields(objects, rq_timestamp()))
                pipe.rpush(self.queue_key, jid)
            pipe.execute()
        log.warning(
            "backfill_job_lost", run=self.name, job_id=jid, requeued=state != RunState.CANCELLED
        )

    # The end ------------------------------------------------------------------------------

    def finish(self, final: RunState) -> str:
        run = states.load(self.connection, self.name)
        below = run.counts["parts"]
        finished_at = now_iso()
        # The parts this driver wrote are counted and indexed already; one pass over the
        # others (all of them, when the spool cannot stand in) writes the rest. summary.json,
        # written last, is there only when the whole output is.
        first = self.spool.start(below)
        tally = copy.deepcopy(self.tally) if first is not None else report.Tally()
        spool = self.spool if first is not None else None

        def counted_lines() -> Iterator[dict[str, Any]]:
            for line in self.output.iter_lines(below=below if first is None else first):
                tally.add(line)
                yield line

        rows = self.output.write_index(lines=counted_lines(), spool=spool)
        summary = tally.report({**run.to_dict(), "finished_at": finished_at})
        summary.update(
            {
                "state": final.value,
                "skipped_by": report.skipped_objects(run.skipped_by),
                "bad_lines": run.counts["bad_lines"],
                "bad_line_list": [list(entry) for entry in run.bad_line_list],
                "cancelled": run.counts["cancelled"],
                "parts": below,
            }
        )
        self.output.write_summary(summary)
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.watch(self.key, self.lease.key)
            current = pipe.hget(self.key, "state")
            self.lease.hold_in(pipe)
            if final == RunState.DONE and (current or b"").decode() != RunState.RUNNING:
                raise redis.WatchError("paused or cancelled while finishing: read again")
            pipe.multi()
            self.lease.keep_in(pipe)
            pipe.hset(self.key, mapping={"state": final.value, "finished_at": finished_at})
            pipe.execute()
        self.forget_seen()  # a cancelled run's listing never ended
        log.info(
            "backfill_finished",
            run=self.name,
            state=final.value,
            objects=summary.get("objects"),
            index_rows=rows,
            images_per_s=summary.get("images_per_s"),
        )
        self.display.update(states.load(self.connection, self.name), True)
        return final.value

    def fail(self, message: str) -> str:
        """Mark the run failed with `message` (resume continues it once the cause is fixed).

        A Redis that is away or full cannot take the record at once: it is tried again for
        up to RECORD_FOR_S, so that `status` says why the run stopped rather than showing
        it running with no driver. LeaseLost when another driver took the run meanwhile:
        its state is that driver's to write."""
        log.error("backfill_failed", run=self.name, error=message)
        until = time.monotonic() + RECORD_FOR_S
        attempt = 0
        while True:
            try:
                with self.connection.pipeline(transaction=True) as pipe:
                    pipe.watch(self.key, self.lease.key)
                    self.lease.hold_in(pipe)
                    pipe.multi()
                    self.lease.keep_in(pipe)
                    pipe.hset(
                        self.key, mapping={"state": RunState.FAILED.value, "error": message[:500]}
                    )
                    pipe.execute()
                return RunState.FAILED.value
            except redis.WatchError:
                continue
            except redis.RedisError as exc:
                if not isinstance(exc, TRANSIENT) or time.monotonic() >= until:
                    log.error("backfill_failure_unrecorded", run=self.name, error=repr(exc)[:200])
                    return RunState.FAILED.value
                time.sleep(backoff_s(attempt))
                attempt += 1


# -- cancel ------------------------------------------------------------------------------------


def cancel(connection: redis.Redis, name: str) -> int:
    """Mark the run cancelled (its driver enqueues nothing more), then take its queued jobs
    off the queue; returns how many. Running jobs finish and are collected by the driver
    (or by `drive`, when no process drives the run)."""
    states.request(connection, name, RunState.CANCELLED)
    run = states.load(connection, name)
    queue_key = names.rq_queue_key(run.spec.options.queue)
    key = names.backfill_key(name)
    inflight_key = names.backfill_inflight_key(name)
    removed = 0
    for raw_id in connection.hkeys(inflight_key):
        jid = raw_id.decode()
        while True:
            with connection.pipeline(transaction=True) as pipe:
                # The queue moves as workers pop it: a pop in between makes EXEC fail, and
                # the job, running now, is left to finish.
                pipe.watch(queue_key, inflight_key)
                held = pipe.hget(inflight_key, jid)
                if held is None or pipe.lpos(queue_key, jid) is None:
                    break
                objects = len(json.loads(held))
                pipe.multi()
                pipe.lrem(queue_key, 0, jid)
                pipe.hdel(inflight_key, jid)
                pipe.delete(names.rq_job_key(jid))
                pipe.hincrby(key, "cancelled", objects)
                try:
                    pipe.execute()
                except redis.WatchError:
                    continue
                removed += 1
                break
    log.info("backfill_cancelled", run=name, jobs_removed=removed)
    return removed
