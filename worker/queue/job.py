"""`QrJob`: an RQ job as this service runs it, and its guarded writes to the job hash.

RQ builds jobs from their hash in several places (the worker's dequeue, its registries and
maintenance, RQ's own CLI and dashboards); wherever a worker of ours builds one, it is a
`QrJob`: JSON only, only `jobs.scan`, `data` inflated within the job limit, and RQ's writes
to the hash made only while it still holds the enqueue that was read (job_hash.lua).

A failed job's bookkeeping (RQ's failed registry, its failure Result) carries the error code
and message as JSON, and moves the job to its next *round*: a failed job that RQ's tools
requeue (`rq requeue`, rq-dashboard's Requeue) is a new delivery of the enqueue, so its new
result is published, where a run again after a lost worker is the same delivery and is not
(docs/protocol.md, *Requeued jobs*).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from redis.client import Pipeline
from redis.commands.core import Script
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from worker.errors import ErrorCode
from worker.queue import context, envelope, names
from worker.queue.context import JobRun
from worker.queue.outcome import failure_text
from worker.rules import quote
from worker.settings import Settings

_JOB_HASH_SCRIPT = Path(__file__).with_name("job_hash.lua").read_text()
# Our field in RQ's job hash (RQ keeps fields it does not know when it saves a job).
ROUND_FIELD = names.JOB_ROUND_FIELD


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
    - A failure that ends the job is filed in RQ's failed registry with that code and
      message as JSON, and moves the job to its next `round`: a requeue from there is a new
      delivery (`_handle_failure`).
    - RQ writes the job's hash (status, a save of the whole job, heartbeats, its expiry)
      only while the hash still holds the enqueue this object was read from (`stamp`,
      checked atomically by job_hash.lua): the result is published before RQ's bookkeeping,
      and a producer that reuses the id as soon as the reply arrives must not have its new
      job overwritten by the old one (defect 9).
    """

    failure_code: ErrorCode | None = None
    failure_message: str = ""
    # The failure's result is out already (published by jobs.scan): RQ's failure
    # bookkeeping follows, and nothing is published again.
    outcome_published: bool = False
    # Times this enqueue has entered RQ's failed registry (ROUND_FIELD): each requeue from
    # there is a new delivery.
    round: int = 0
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
        self.round = envelope.round_of(fields.get(ROUND_FIELD))
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

    def _handle_failure(
        self, exc_string: str, pipeline: Pipeline, *args: Any, **kwargs: Any
    ) -> None:
        """RQ's failure bookkeeping (the failed registry, a failure Result), called for every
        failure that ends the job, in the worker or in RQ's maintenance pass: the failure
        text is our code and message as JSON; the job stays its `failure_ttl`, else as long
        as its producer asked RQ to keep it (`result_ttl`: a backfill keeps its hashes a
        minute), else QRW_RESULT_TTL, never RQ's default of a year; and it moves to its next
        round in the same transaction."""
        if self.failure_code is not None:
            exc_string = failure_text(self.failure_code, self.failure_message)
        if self.failure_ttl is None:
            kept = self.result_ttl if self.result_ttl is not None and self.result_ttl > 0 else None
            self.failure_ttl = kept or _result_ttl()
        self._guarded(pipeline).hset(self.key, ROUND_FIELD, str(self.round + 1))
        super()._handle_failure(exc_string, pipeline, *args, **kwargs)

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
    """Which enqueue of its id, and which round of it, `job` is: the same token for every
    run of it until it fails for good; a requeue from RQ's failed registry is a new one."""
    rounds = job.round if isinstance(job, QrJob) else 0
    return envelope.delivery(utcformat(job.created_at), job.data, rounds)


def _settings() -> Settings:
    ctx = context.get()
    return ctx.settings if ctx else Settings()


def _job_limit() -> int:
    return _settings().max_job_bytes


def _result_ttl() -> int:
    return _settings().result_ttl


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: Any) -> bytes:
    """A value as redis-py sends it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()
