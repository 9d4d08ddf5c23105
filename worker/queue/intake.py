"""Taking a job off the queue: the envelope is checked before RQ prepares anything.

`QrQueue.dequeue_any` pops an id as RQ does (LMOVE to RQ's intermediate list, or LPOP),
then reads the job hash once (its sizes first, so an oversized job is never loaded),
checks it (worker.queue.envelope) and only then lets RQ build its Job from the same
fields. A job that fails a check never reaches RQ: it gets one published failure result
under its id (a dead-letter entry when the id cannot name one), its hash is marked
failed and taken off RQ's lists, and the worker pops the next id. An id whose hash is not
waiting to run (started, finished or failed: the same enqueue pushed twice) is not run
again: one `duplicate_job` dead-letter entry, the hash left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import redis
import structlog
from redis.client import Pipeline
from redis.commands.core import Script
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import get_version, now, utcformat

from worker.engine.errors import ErrorCode
from worker.queue import context, envelope, names, payloads
from worker.queue.context import JobRun
from worker.queue.envelope import JobRejected, UnusableJobId
from worker.queue.results import JobResult, clip
from worker.rules import quote
from worker.settings import Settings

log = structlog.get_logger("worker")

DEAD_LETTER_MAXLEN = 10_000
# The dead-letter code of an id popped again after its enqueue was answered, or while it
# runs: no result carries it (the enqueue has, or will have, its own), so it is no ErrorCode.
DUPLICATE_JOB = "duplicate_job"
# A hash in one of these states is not waiting to run: popping its id again is a duplicate.
# RQ's own requeues (a retry, an abandoned job) set `queued` first, in the same transaction.
NOT_WAITING = {
    JobStatus.STARTED.value.encode(): "another worker is running it",
    JobStatus.FINISHED.value.encode(): "its result was already delivered",
    JobStatus.FAILED.value.encode(): "its result was already delivered",
}
_JOB_HASH_SCRIPT = Path(__file__).with_name("job_hash.lua").read_text()


class QrJob(Job):
    """A job as RQ sees it, restricted to what this service runs.

    - JSON only: no field of a job hash is ever unpickled, on any path.
    - `func` refuses any function but ours before anything is imported (intake already
      refused such jobs; this holds for any path that builds a Job from a hash).
    - `restore` inflates `data` and `exc_info` with the job limit, wherever RQ reads a
      job hash.
    - The job function runs arq-style: `jobs.scan(ctx, run, payload)`.
    - The failure handler records the failure's code here, by the exception's type, for
      the worker to publish (see worker.queue.rq_worker).
    - RQ writes the job's hash (status, a save of the whole job, heartbeats, its expiry)
      only while the hash still holds the enqueue this object was read from (`stamp`,
      checked atomically by job_hash.lua): the result is published before RQ's bookkeeping,
      and a producer that reuses the id as soon as the reply arrives must not have its new
      job overwritten by the old one (defect 9).
    """

    failure_code: ErrorCode | None = None
    failure_message: str = ""
    # The enqueue this object was read from; None for a job built in memory (RQ's own
    # enqueue API), whose writes stay RQ's, unguarded.
    stamp: envelope.Stamp | None = None
    _job_hash: ClassVar[Script | None] = None

    def __init__(
        self, id: str | None = None, connection: Any = None, serializer: Any = None
    ) -> None:
        # JSON whoever builds the job: RQ's registries and maintenance pass the queue's
        # serializer, and RQ's default is pickle (loaded from the hash's meta and result).
        super().__init__(id, connection=connection, serializer=JSONSerializer)

    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in names.ALLOWED_FUNCTIONS:
            raise envelope.RefusedJob(
                f"job function {quote(name)} is not allowed; the only one is {names.JOB_FUNCTION!r}"
            )
        return super().func

    def restore(self, raw_data: Any) -> Any:
        # RQ inflates `data` and `exc_info` with zlib.decompress, without a limit (and a
        # doubly compressed field twice): both are inflated here, once, with the job
        # limit, and RQ is handed a placeholder it cannot inflate.
        limit = _job_limit()
        fields = {_text(k): v for k, v in dict(raw_data).items()}
        data, exc_info = fields.get("data"), fields.pop("exc_info", None)
        if isinstance(data, bytes):
            fields["data"] = b"[]"
        restored = super().restore(fields)
        self.stamp = envelope.Stamp.of(fields.get("created_at"), data)
        if isinstance(data, bytes):
            self.data = envelope.inflate(data, limit)
        if isinstance(exc_info, bytes):
            text = envelope.inflate(exc_info, limit)
            self._exc_info = text.decode("utf-8", errors="replace")
        return restored

    @property
    def delivery(self) -> str:
        return delivery_of(self)

    def run(self) -> JobRun:
        return JobRun(self.id, self.delivery, self.enqueued_at)

    def _execute(self) -> Any:
        return self.func(context.current(), self.run(), *self.args, **self.kwargs)

    # RQ's writes to the job hash, each made through _GuardedWrites.

    def set_status(self, status: JobStatus, pipeline: Pipeline | None = None) -> None:
        super().set_status(status, pipeline=self._guarded(pipeline))

    def save(
        self,
        pipeline: Pipeline | None = None,
        include_meta: bool = True,
        include_result: bool = True,
    ) -> None:
        super().save(
            pipeline=self._guarded(pipeline),
            include_meta=include_meta,
            include_result=include_result,
        )

    def heartbeat(
        self, timestamp: datetime, ttl: int, pipeline: Pipeline | None = None, xx: bool = False
    ) -> None:
        super().heartbeat(timestamp, ttl, pipeline=self._guarded(pipeline), xx=xx)

    def cleanup(
        self,
        ttl: int | None = None,
        pipeline: Pipeline | None = None,
        remove_from_queue: bool = True,
    ) -> None:
        if ttl == 0 and not self.holds_hash():
            # `result_ttl 0`: RQ would delete the hash and every execution under the id,
            # a new job's by now (a running one would lose its lease).
            return
        super().cleanup(ttl, pipeline=self._guarded(pipeline), remove_from_queue=remove_from_queue)

    def prepare_for_execution(self, worker_name: str, pipeline: Pipeline) -> None:
        super().prepare_for_execution(worker_name, self._guarded(pipeline))  # type: ignore[arg-type]

    def write_fields(self, mapping: dict[str, Any]) -> None:
        """HSET fields of this job's hash, if it still holds this enqueue."""
        self._guarded(None).hset(self.key, mapping=mapping)

    def holds_hash(self) -> bool:
        """Whether the job hash still holds the enqueue this job was read from (True for
        a job not read from Redis)."""
        return self.stamp is None or self.guard(self.connection, "check") == 1

    def guard(self, client: Any, op: str, *args: Any) -> Any:
        """Run one write of job_hash.lua on `client` (a connection or a pipeline)."""
        assert self.stamp is not None
        script = type(self)._job_hash
        if script is None:  # registered once per process, run by its digest from then on
            script = type(self)._job_hash = self.connection.register_script(_JOB_HASH_SCRIPT)
        stamp = self.stamp
        return script(
            keys=[self.key], args=[stamp.created_at, stamp.data_sha1, op, *args], client=client
        )

    def _guarded(self, pipeline: Any) -> Any:
        client = pipeline if pipeline is not None else self.connection
        if isinstance(client, _GuardedWrites):  # RQ handing our wrapper back in (delete)
            client = client.client
        return client if self.stamp is None else _GuardedWrites(self, client)


class _GuardedWrites:
    """The connection or pipeline RQ writes a job through: every write to the job's own
    hash goes through job_hash.lua, conditional on the hash still holding the job's stamp;
    everything else (registries, RQ's result stream) passes through unchanged.

    RQ decides what to write, as in every version; only where it lands is checked. A save
    rewrites `created_at` and `data` (RQ stores `data` zlib-compressed), so the stamp moves
    on with it: the writes queued after it in the same pipeline check the new bytes.
    """

    def __init__(self, job: QrJob, client: Any) -> None:
        self._job = job
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def __len__(self) -> int:
        return len(self.client)

    def hset(
        self,
        name: str,
        key: Any = None,
        value: Any = None,
        mapping: dict[Any, Any] | None = None,
        items: list[Any] | None = None,
    ) -> Any:
        if name != self._job.key:
            return self.client.hset(name, key, value, mapping, items)
        pieces: list[Any] = [] if key is None else [key, value]
        for pair in (mapping or {}).items():
            pieces.extend(pair)
        pieces.extend(items or ())
        reply = self._job.guard(self.client, "hset", *pieces)
        written = dict(zip(pieces[::2], pieces[1::2], strict=True))
        stamp = self._job.stamp
        if stamp is not None and written.keys() & {"created_at", "data"}:
            self._job.stamp = envelope.Stamp(
                _bytes(written.get("created_at", stamp.created_at)),
                envelope.Stamp.digest(_bytes(written["data"]))
                if "data" in written
                else stamp.data_sha1,
            )
        return reply

    def expire(self, name: str, time: int, **options: Any) -> Any:
        if name != self._job.key or options:
            return self.client.expire(name, time, **options)
        return self._job.guard(self.client, "expire", int(time))

    def persist(self, name: str) -> Any:
        if name != self._job.key:
            return self.client.persist(name)
        return self._job.guard(self.client, "persist")

    def delete(self, *names: str) -> Any:
        others = [name for name in names if name != self._job.key]
        reply = self.client.delete(*others) if others else None
        if len(others) < len(names):
            reply = self._job.guard(self.client, "del")
        return reply


def delivery_of(job: Job) -> str:
    """Which enqueue of its id `job` is: the same token for every run of it."""
    return envelope.delivery(utcformat(job.created_at), job.data)


def _job_limit() -> int:
    ctx = context.get()
    return ctx.settings.max_job_bytes if ctx else Settings().max_job_bytes


class QrIntermediateQueue(IntermediateQueue):
    """RQ's list of popped, not yet started ids, as its maintenance sweeps it.

    An id left there by a worker that died right after popping it may be one RQ cannot
    parse (RQ raises on it in every worker's maintenance, for good): those are
    dead-lettered first, and RQ sweeps the rest as it always does.
    """

    def cleanup(self, worker: Any, queue: Queue) -> None:
        for raw_id in self.connection.lrange(self.key, 0, -1):
            try:
                envelope.job_id(raw_id)
            except UnusableJobId as rejected:
                reject_unusable(self.connection, queue, raw_id, rejected)
        super().cleanup(worker, queue)


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
        while True:
            # RQ's own pop, unchanged: one queue moves the id to its intermediate list
            # (recovered by RQ's maintenance if this process dies right now).
            if len(queue_keys) == 1 and get_version(connection) >= (6, 2, 0):
                popped = cls.lmove(connection, queue_keys[0], timeout)
            else:
                popped = cls.lpop(queue_keys, timeout, connection=connection)
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
                job = admit(connection, queue, raw_id)
            except (redis.ConnectionError, redis.TimeoutError):
                raise  # RQ's dequeue loop backs off and reconnects
            except Exception as exc:
                # A bug in the checks must not cost the worker: the job is answered anyway.
                log.exception("job_admission_failed", job_id=envelope.quote_id(raw_id))
                reject_unusable(
                    connection,
                    queue,
                    raw_id,
                    JobRejected(
                        ErrorCode.INTERNAL_ERROR,
                        clip(f"admission failed: {type(exc).__name__}: {exc}", 300),
                    ),
                )
                continue
            if job is not None:
                return job, queue


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
    """One failure result under the job's id; the hash failed and out of RQ's lists."""
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
    if fields:  # a hash was there: never create one for an id nobody enqueued
        key = names.rq_job_key(job_id)
        with connection.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": "failed", "ended_at": utcformat(now())})
            pipe.expire(key, ctx.settings.result_ttl)
            pipe.execute()
    delivered = ctx.publisher.publish(
        result.to_dict(),
        echo.reply_to,
        envelope.raw_delivery(fields),
        result_ttl=echo.result_ttl,
        stream=echo.stream,
    )
    # Only now off RQ's intermediate list: had the publish failed, RQ's maintenance would
    # still find the job there and fail it with a result.
    connection.lrem(queue.intermediate_queue_key, 1, raw_id)
    _count(rejected.code.value)
    log.error(
        "job_rejected",
        job_id=job_id,
        queue=queue.name,
        error=rejected.code.value,
        detail=rejected.message,
        delivered=delivered,
    )


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
    _dead_letter(connection, queue, raw_id, quoted, rejected.code.value, rejected.message)
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
    _dead_letter(connection, queue, raw_id, job_id, DUPLICATE_JOB, message)
    log.warning(
        "job_duplicate",
        job_id=job_id,
        queue=queue.name,
        status=status.decode(),
        detail=message,
    )


def _dead_letter(
    connection: redis.Redis, queue: Queue, raw_id: bytes, job_id: str, code: str, message: str
) -> None:
    """One entry on the dead-letter stream, and the id off RQ's intermediate list."""
    ctx = context.current()
    with connection.pipeline(transaction=True) as pipe:
        pipe.xadd(
            names.DEAD_LETTER_STREAM,
            {
                "job_id": job_id,
                "queue": queue.name,
                "code": code,
                "message": message,
                "worker": ctx.worker,
                "at": utcformat(now()),
            },
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
        pipe.lrem(queue.intermediate_queue_key, 1, raw_id)
        pipe.execute()
    _count(code)


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


def _count(code: str) -> None:
    from worker import metrics  # imported in the worker process: see worker.metrics_env

    metrics.JOBS.labels(code).inc()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: Any) -> bytes:
    """A value as redis-py sends it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()
