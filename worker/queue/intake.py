"""Taking a job off the queue: the envelope is checked before RQ prepares anything.

`QrQueue.dequeue_any` pops an id as RQ does (LMOVE to RQ's intermediate list, or LPOP),
then reads the job hash once (its sizes first, so an oversized job is never loaded),
checks it (worker.queue.envelope) and only then lets RQ build its Job from the same
fields. A job that fails a check never reaches RQ: it gets one published failure result
under its id (a dead-letter entry when the id cannot name one; worker.queue.outcome
publishes, counts and logs either), its hash is marked failed (and listed in RQ's failed
registry when RQ's tools can read it) and taken off RQ's queue lists, and the worker pops
the next id. An id whose hash is not
waiting to run (started, finished or failed: the same enqueue pushed twice) is not run
again: one `duplicate_job` dead-letter entry, the hash left alone.

A popped job is never dropped for a Redis that refuses writes (full under `noeviction`, a
replica after a failover): its admission is retried with backoff until Redis takes it.
And the maintenance pass finds the jobs no worker will ever run (`recover_stranded`): a
hash that says queued or started while its id is in no queue, intermediate list or started
registry and no live worker holds it, as a worker that died between its pop and its
registration left it (issue 18, point 2: 27 objects of a backfill never got a line).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import Enum
from typing import Any

import redis
import structlog
from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import get_version, now, utcformat

from worker.errors import ErrorCode
from worker.queue import context, envelope, names, outcome, payloads
from worker.queue.envelope import JobRejected, UnusableJobId
from worker.queue.job import QrJob
from worker.queue.replies import WRITE_REFUSED, wait_for_writes
from worker.queue.results import JobResult, clip
from worker.queue.stopping import GATE, POP_SLICE_S
from worker.rules import quote
from worker.settings import Settings

log = structlog.get_logger("worker")

# The dead-letter code of an id popped again after its enqueue was answered, or while it
# runs: no result carries it (the enqueue has, or will have, its own), so it is no ErrorCode.
DUPLICATE_JOB = "duplicate_job"
# A hash in one of these states is not waiting to run: popping its id again is a duplicate.
# RQ's own requeues (a retry, an abandoned job, `rq requeue`) set `queued` first, in the
# same transaction.
NOT_WAITING = {
    JobStatus.STARTED.value.encode(): "another worker is running it",
    JobStatus.FINISHED.value.encode(): "its result was already delivered",
    JobStatus.FAILED.value.encode(): "its result was already delivered",
}


# Job hashes one maintenance pass looks at per queue (SCAN's COUNT), from where the last
# pass stopped: a few milliseconds of Redis per pass; a million keys are covered in about
# a thousand passes (under three hours at the default 10 s interval).
STRANDED_SCAN_COUNT = 1000
# A queue longer than this (about 0.7 MB of ids) is not read whole to tell its waiting jobs
# from stranded ones: its queued-looking hashes are judged once it is shorter (started ones
# are judged anyway). Read only in a pass that found a queued job held nowhere else.
STRANDED_QUEUE_READ_MAX = 20_000
# Where the scan goes on from, per queue; kept a day after the last pass.
STRANDED_CURSOR_PREFIX = names.PREFIX + "stranded-scan:"
# A stranded-looking job first seen at (a timestamp); judged again a grace later.
STRANDED_SEEN_PREFIX = names.PREFIX + "stranded-seen:"
_STRANDED_STATES = (JobStatus.QUEUED.value.encode(), JobStatus.STARTED.value.encode())


class QrIntermediateQueue(IntermediateQueue):
    """RQ's list of popped, not yet started ids, as its maintenance sweeps it.

    An id left there by a worker that died right after popping it may be one RQ cannot
    parse (RQ raises on it in every worker's maintenance, for good): those are
    dead-lettered first, and RQ sweeps the rest as it always does. Then the jobs that are
    in no list at all are looked for (`recover_stranded`).
    """

    def cleanup(self, worker: Any, queue: Queue) -> None:
        for raw_id in self.connection.lrange(self.key, 0, -1):
            try:
                envelope.job_id(raw_id)
            except UnusableJobId as rejected:
                reject_unusable(self.connection, queue, raw_id, rejected)
        super().cleanup(worker, queue)
        try:
            recover_stranded(self.connection, queue, stranded_grace_s())
        except redis.ResponseError as exc:
            # Refused writes, or a Redis without SCAN's TYPE (before 6.0): a scan that
            # cannot run must not cost the worker its loop. The next pass tries again.
            log.warning("stranded_scan_failed", queue=queue.name, error=str(exc)[:300])


def stranded_grace_s() -> int:
    """How long a job must look stranded before it is queued again: three maintenance
    intervals, so a live worker that popped it (and waits for a full Redis to take its
    registration, retrying at most every few seconds) has registered it long before."""
    return max(15, 3 * maintenance_interval_s())


def recover_stranded(connection: redis.Redis, queue: Queue, grace_s: int) -> list[str]:
    """Queue again this queue's jobs that nothing would ever run; returns their ids.

    Stranded: the hash says queued or started, but the id is in neither the queue, its
    intermediate list nor its started registry, and the worker the hash names (if any) is
    gone: a worker popped it (BLPOP, when it serves several queues) and died before
    registering it, or RQ's bookkeeping was cut off. A job is put back only once it has
    looked stranded for `grace_s` (first seen in one pass, still so in a later one), and
    only if its hash has not moved meanwhile (WATCH). Each pass SCANs a bounded slice of
    the job hashes (STRANDED_SCAN_COUNT), going on from where the last one stopped.
    """
    cursor_key = STRANDED_CURSOR_PREFIX + queue.name
    cursor = int(connection.get(cursor_key) or 0)
    cursor, keys = connection.scan(
        cursor, match=names.RQ_JOB_PREFIX + "*", count=STRANDED_SCAN_COUNT, _type="HASH"
    )
    connection.set(cursor_key, cursor, ex=86_400)
    if not keys:
        return []
    with connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "status", "origin", "worker_name")
        rows = pipe.execute(raise_on_error=False)
    origin = queue.name.encode()
    candidates = [
        (key, row[0], row[2])
        for key, row in zip(keys, rows, strict=True)
        if isinstance(row, list) and row[1] == origin and row[0] in _STRANDED_STATES
    ]
    if not candidates:
        return []
    held = {job_id.encode() for job_id in queue.started_job_registry.get_job_ids(cleanup=False)}
    held.update(connection.lrange(queue.intermediate_queue_key, 0, -1))
    prefix = len(names.RQ_JOB_PREFIX)
    unheld = [
        (raw_id, status, worker_name)
        for key, status, worker_name in candidates
        if (raw_id := (key if isinstance(key, bytes) else key.encode())[prefix:]) not in held
    ]
    queued: set[bytes] | None = None
    waiting = any(status == JobStatus.QUEUED.value.encode() for _, status, _ in unheld)
    if waiting and connection.llen(queue.key) <= STRANDED_QUEUE_READ_MAX:
        queued = set(connection.lrange(queue.key, 0, -1))
    recovered = []
    for raw_id, status, worker_name in unheld:
        if status == JobStatus.QUEUED.value.encode() and (queued is None or raw_id in queued):
            continue
        started = status == JobStatus.STARTED.value.encode()
        worker_key = names.rq_worker_key((worker_name or b"").decode(errors="replace"))
        if started and worker_name and connection.exists(worker_key):
            # Its worker is alive: its own run (or RQ's lease) ends it. (A queued job's
            # worker_name is an earlier run's, and says nothing of who popped it now.)
            continue
        try:
            job_id = envelope.job_id(raw_id)
        except UnusableJobId:
            continue  # no queue holds it: nothing to run, and it was never ours to answer
        if _requeue_stranded(connection, queue, job_id, status, grace_s):
            recovered.append(job_id)
    return recovered


def _requeue_stranded(
    connection: redis.Redis, queue: Queue, job_id: str, status: bytes, grace_s: int
) -> bool:
    seen_key = f"{STRANDED_SEEN_PREFIX}{queue.name}:{job_id}"
    now_s = time.time()
    if connection.set(seen_key, now_s, nx=True, ex=grace_s * 4):
        return False  # first seen now: a live worker may be about to register it
    first = float(connection.get(seen_key) or now_s)
    if now_s - first < grace_s:
        return False
    key = names.rq_job_key(job_id)
    with connection.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            if pipe.hget(key, "status") != status:
                return False  # moved on since the scan: someone has it
            pipe.multi()
            pipe.hset(key, "status", JobStatus.QUEUED.value)
            # At the front: it was popped from there, and has waited longest.
            pipe.lpush(queue.key, job_id)
            pipe.delete(seen_key)
            pipe.execute()
        except redis.WatchError:
            return False
    log.warning(
        "job_stranded_requeued",
        job_id=job_id,
        queue=queue.name,
        status=status.decode(),
        stranded_s=round(now_s - first, 1),
    )
    return True


class QrQueue(Queue):
    # Queues built from a name alone (RQ's pool does that) still build our jobs, and
    # read them as JSON: RQ's default serializer is pickle.
    job_class = QrJob

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)

    @property
    def intermediate_queue(self) -> IntermediateQueue:
        return QrIntermediateQueue(self.key, connection=self.connection)

    def acquire_maintenance_lock(self) -> bool:
        """RQ's maintenance lock on this queue, held at most `maintenance_lock_ttl_s()`.

        RQ's lasts 899 s and is deleted only by a pass that ends well: a worker that died
        mid-pass (on a full Redis) held every pool's recovery off for 15 minutes. A lock
        found with a longer time to live (taken by RQ's default, an older deploy) is
        shortened to ours.
        """
        ttl = maintenance_lock_ttl_s()
        if self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=ttl):
            return True
        if self.connection.ttl(self.registry_cleaning_key) > ttl:
            self.connection.expire(self.registry_cleaning_key, ttl)
        return False

    def keep_maintenance_lock(self) -> None:
        """After a pass that ended well: the lock stays until the next pass is due, so that
        one pass an interval serves every worker of the queue. Each worker is due every
        interval from its own last pass; released at once, workers out of step with each
        other each made their own (N passes an interval for N workers). Kept for most of the
        interval, not all of it, so that the worker that made the pass finds it free when
        it is next due, and a pass is never two intervals apart."""
        interval_ms = maintenance_interval_s() * 1000
        self.connection.pexpire(self.registry_cleaning_key, int(interval_ms * _LOCK_KEPT))

    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: redis.Redis,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        queue_keys = [queue.key for queue in queues]
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            # Nothing is in hand between two pops: a stop asked for meanwhile ends the wait
            # here, where no job can be lost (see worker.queue.stopping).
            GATE.check()
            GATE.hold()
            try:
                job = cls._pop_and_admit(
                    connection, queue_keys, until, job_class, serializer, death_penalty_class
                )
            except BaseException:
                GATE.release()
                raise
            if job is not AGAIN:
                return job  # held until the worker has run it (None: nothing to hold)
            GATE.release()

    @classmethod
    def _pop_and_admit(
        cls,
        connection: redis.Redis,
        queue_keys: list[str],
        until: float | None,
        job_class: type[Job] | None,
        serializer: Any,
        death_penalty_class: Any,
    ) -> tuple[Job, Queue] | _Again | None:
        """One pop and its admission: the admitted job; AGAIN when the pop found nothing
        within POP_SLICE_S (time left) or popped a job that was refused and answered; None
        when a non-blocking pop (burst mode) found the queues empty. Raises RQ's
        DequeueTimeout once the whole wait is over."""
        wait = None if until is None else min(POP_SLICE_S, until - time.monotonic())
        if wait is not None and wait < MIN_POP_S:
            raise DequeueTimeout(0, queue_keys)
        try:
            # RQ's own pop, unchanged: one queue moves the id to its intermediate list
            # (recovered by RQ's maintenance if this process dies right now).
            if len(queue_keys) == 1 and get_version(connection) >= (6, 2, 0):
                popped = cls.lmove(connection, queue_keys[0], wait)
            else:
                popped = cls.lpop(queue_keys, wait, connection=connection)
        except DequeueTimeout:
            if until is not None and until - time.monotonic() >= MIN_POP_S:
                return AGAIN  # the slice is over, not the wait
            raise
        if popped is None:
            return None
        queue_key = _text(popped[0])
        raw_id = popped[1] if isinstance(popped[1], bytes) else str(popped[1]).encode()
        queue = cls.from_queue_key(
            queue_key,
            connection=connection,
            job_class=job_class,
            serializer=serializer,
            death_penalty_class=death_penalty_class,
        )
        try:
            job = admit_holding(connection, queue, raw_id)
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # RQ's dequeue loop backs off and reconnects
        except Exception as exc:
            # A bug in the checks must not cost the worker: the job is answered anyway.
            log.exception("job_admission_failed", job_id=envelope.quote_id(raw_id))
            answer_admission_failure(connection, queue, raw_id, exc)
            return AGAIN
        return AGAIN if job is None else (job, queue)


class _Again(Enum):
    """What one pop returns when the worker should pop again."""

    AGAIN = 0


AGAIN = _Again.AGAIN
# A pop with less than this left of its wait is not started: BLPOP reads 0 as "for ever".
MIN_POP_S = 0.01


def answer_admission_failure(
    connection: redis.Redis, queue: Queue, raw_id: bytes, exc: Exception
) -> None:
    """The failure result of a job whose admission itself failed (a bug of ours): under
    its id when the id can name one, like any refused job; else a dead-letter entry."""
    rejected = JobRejected(
        ErrorCode.INTERNAL_ERROR, clip(f"admission failed: {type(exc).__name__}: {exc}", 300)
    )
    try:
        job_id = envelope.job_id(raw_id)
    except UnusableJobId:
        reject_unusable(connection, queue, raw_id, rejected)
        return
    fields = connection.hgetall(names.rq_job_key(job_id))
    reject(connection, queue, job_id, raw_id, fields, rejected)


# Share of the interval a pass that ended well keeps its queue's lock (keep_maintenance_lock).
_LOCK_KEPT = 0.8


def maintenance_interval_s() -> int:
    """QRW_RECOVERY_INTERVAL: seconds between maintenance passes on a queue."""
    ctx = context.get()
    return ctx.settings.recovery_interval if ctx else Settings().recovery_interval


def maintenance_lock_ttl_s() -> int:
    """Seconds a maintenance pass may hold its queue's lock: three intervals (a pass takes
    well under one), at least 15 s, never RQ's 899. A pass that outlives it may overlap the
    next one: RQ's cleanups and `recover_stranded` each act on a job only while it is still
    as they found it."""
    return min(899, max(15, 3 * maintenance_interval_s()))


def admit_holding(connection: redis.Redis, queue: Queue, raw_id: bytes) -> Job | None:
    """`admit`, tried again with backoff while Redis refuses its writes: a job popped off
    several queues (BLPOP) is in no list now, and only this process can run it."""
    attempt = 0
    while True:
        try:
            return admit(connection, queue, raw_id)
        except WRITE_REFUSED as exc:
            wait_for_writes("admission", exc, attempt, job_id=envelope.quote_id(raw_id))
            attempt += 1


def admit(connection: redis.Redis, queue: Queue, raw_id: bytes) -> Job | None:
    """The popped job as our Job, or None once a rejected one has been answered."""
    ctx = context.current()
    limit = ctx.settings.max_job_bytes
    try:
        job_id = envelope.job_id(raw_id)
    except UnusableJobId as rejected:
        reject_unusable(connection, queue, raw_id, rejected)
        return None
    key = names.rq_job_key(job_id)
    kind, data_bytes, hash_bytes = _sizes(connection, key)
    if kind not in (b"hash", b"none"):
        rejected = envelope.InvalidJob(f"{key} is a {kind.decode()}, not a job hash")
        reject(connection, queue, job_id, raw_id, {}, rejected)
        return None
    try:
        envelope.stored_size(data_bytes, hash_bytes, limit)
    except JobRejected as rejected:
        # Never loaded: the delivery is told by the creation time and the size alone.
        reject(connection, queue, job_id, raw_id, _identity(connection, key, data_bytes), rejected)
        return None
    fields: dict[bytes, bytes] = {}
    try:
        fields = connection.hgetall(key)
        status = fields.get(b"status", b"")
        if status in NOT_WAITING:
            dead_letter_duplicate(connection, queue, job_id, raw_id, status)
            return None
        checked = envelope.check(fields, job_id, limit)
        origin = fields.get(b"origin", b"").decode("utf-8", errors="replace")
        if origin != queue.name:
            raise envelope.InvalidJob(
                f"the job's origin must be the queue it is on ({queue.name!r}), not {quote(origin)}"
            )
        if not fields.get(b"created_at"):
            # RQ would stamp a new time at every read; one stamp keeps every run of this
            # enqueue the same delivery.
            stamp = utcformat(now()).encode()
            connection.hsetnx(key, "created_at", stamp)
            fields[b"created_at"] = connection.hget(key, "created_at") or stamp
        job = QrJob(job_id, connection=connection, serializer=queue.serializer)
        try:
            job.restore({**fields, b"data": checked.data})
        except Exception as exc:
            raise envelope.InvalidJob(
                clip(f"RQ cannot read the job hash: {type(exc).__name__}: {exc}", 300)
            ) from None
        # What the hash held when read (restore saw the inflated data): RQ's writes to it
        # are made only while it still holds exactly this.
        job.stamp = envelope.Stamp.of(fields[b"created_at"], fields[b"data"])
    except JobRejected as rejected:
        reject(connection, queue, job_id, raw_id, fields, rejected)
        return None
    return job


def reject(
    connection: redis.Redis,
    queue: Queue,
    job_id: str,
    raw_id: bytes,
    fields: dict[bytes, bytes],
    rejected: JobRejected,
) -> None:
    """One failure result under the job's id; the hash failed (in RQ's failed registry
    when RQ's tools can read it) and out of RQ's lists."""
    ctx = context.current()
    echo = payloads.echo(envelope.salvage_payload(fields, ctx.settings.max_job_bytes))
    result = JobResult.failed(
        ctx,
        job_id,
        rejected.code,
        rejected.message,
        request_id=echo.request_id,
        meta=echo.meta,
    )
    delivery = envelope.raw_delivery(fields)  # this round's, before the hash moves on
    if fields:  # a hash was there: never create one for an id nobody enqueued
        _fail_hash(connection, queue, job_id, fields, rejected)
    outcome.finish(ctx, result, echo, delivery, event="job_rejected", queue=queue.name)
    # Only now off RQ's intermediate list: had the publish failed, RQ's maintenance would
    # still find the job there and fail it with a result.
    connection.lrem(queue.intermediate_queue_key, 1, raw_id)


def _fail_hash(
    connection: redis.Redis,
    queue: Queue,
    job_id: str,
    fields: dict[bytes, bytes],
    rejected: JobRejected,
) -> None:
    """Mark a refused job's hash failed, expiring with the result. A hash RQ's tools can
    read (rq-dashboard, rq-exporter, `rq requeue`) goes through RQ's own failure
    bookkeeping, so it is counted and listed in RQ's failed registry like any other failed
    job; any other is only marked, since one unreadable job there breaks their pages."""
    ctx = context.current()
    job = _readable_job(connection, queue, job_id, fields)
    with connection.pipeline(transaction=True) as pipe:
        if job is None:
            key = names.rq_job_key(job_id)
            pipe.hset(key, mapping={"status": "failed", "ended_at": utcformat(now())})
            pipe.expire(key, ctx.settings.result_ttl)
        else:
            job.failure_code, job.failure_message = rejected.code, rejected.message
            job.ended_at = now()
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job._handle_failure("", pipe, worker_name=ctx.worker)
        pipe.execute()


def _readable_job(
    connection: redis.Redis, queue: Queue, job_id: str, fields: dict[bytes, bytes]
) -> QrJob | None:
    """The refused job as RQ reads it, if RQ can (its data a JSON job of the right shape,
    its fields parsed) and it belongs to this queue's failed registry; else None."""
    if fields.get(b"origin", b"") != queue.name.encode():
        return None
    job = QrJob(job_id, connection=connection)
    try:
        job.restore(fields)
        job.args, job.kwargs, job.func_name  # noqa: B018  (what RQ's tools unpack)
    except Exception:  # any reason RQ cannot read it: only marked failed
        return None
    job.stamp = envelope.Stamp.of(fields.get(b"created_at"), fields.get(b"data"))
    return job


def reject_unusable(
    connection: redis.Redis, queue: Queue, raw_id: bytes, rejected: JobRejected
) -> None:
    """A job whose id cannot name a result: one entry on the dead-letter stream."""
    ctx = context.current()
    key = names.RQ_JOB_PREFIX.encode() + raw_id  # raw: the id may not even be UTF-8
    # The hash first, the entry last: whoever reads the entry finds the hash settled.
    if connection.exists(key):  # never create a hash for an id nobody enqueued
        with connection.pipeline(transaction=True) as pipe:
            pipe.hset(key, "status", "failed")
            pipe.expire(key, ctx.settings.result_ttl)
            pipe.execute()
    quoted = envelope.quote_id(raw_id)
    outcome.dead_letter(
        connection,
        ctx,
        queue.name,
        queue.intermediate_queue_key,
        raw_id,
        quoted,
        rejected.code.value,
        rejected.message,
    )
    log.error(
        "job_dead_lettered",
        job_id=quoted,
        queue=queue.name,
        error=rejected.code.value,
        detail=rejected.message,
    )


def dead_letter_duplicate(
    connection: redis.Redis, queue: Queue, job_id: str, raw_id: bytes, status: bytes
) -> None:
    """An id popped while its hash is not waiting to run (a second RPUSH of one enqueue):
    not run again, since that enqueue has its result or a worker that will give it one,
    and a second result would reach a producer that already has its one. The hash is left
    as it is; one entry on the dead-letter stream says what happened."""
    message = (
        f"the job was popped again while its hash says {status.decode()}: "
        f"{NOT_WAITING[status]}, so it is not run twice"
    )
    outcome.dead_letter(
        connection,
        context.current(),
        queue.name,
        queue.intermediate_queue_key,
        raw_id,
        job_id,
        DUPLICATE_JOB,
        message,
    )
    log.warning(
        "job_duplicate",
        job_id=job_id,
        queue=queue.name,
        status=status.decode(),
        detail=message,
    )


def _sizes(connection: redis.Redis, key: str) -> tuple[bytes, int, int | None]:
    """The key's type, the stored `data` length and, where Redis answers MEMORY USAGE,
    the whole hash's size: one round trip, nothing of the job loaded yet."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.type(key)
        pipe.hstrlen(key, "data")
        pipe.memory_usage(key, samples=0)
        kind, data_bytes, hash_bytes = pipe.execute(raise_on_error=False)
    if isinstance(kind, Exception):
        raise kind
    kind = kind if isinstance(kind, bytes) else str(kind).encode()
    if kind != b"hash":
        return kind, 0, None
    if isinstance(hash_bytes, Exception):
        hash_bytes = None  # MEMORY is renamed away on some managed Redis services
    return kind, int(data_bytes), (int(hash_bytes) if hash_bytes is not None else None)


def _identity(connection: redis.Redis, key: str, data_bytes: int) -> dict[bytes, bytes]:
    """Stand-in fields of a hash too large to read: its `created_at` (when of a sane
    length) and the size of its `data`, enough to tell one enqueue from another."""
    created_at = b""
    if connection.hstrlen(key, "created_at") <= 64:
        created_at = connection.hget(key, "created_at") or b""
    return {b"created_at": created_at, b"data": b"%d bytes, not read" % data_bytes}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
