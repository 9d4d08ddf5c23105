"""The producer side of docs/protocol.md, in Python: exactly the Redis commands a
producer in any language sends. It does not import RQ, on purpose: what works here
works from Rust."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

from worker.backoff import backoff_s
from worker.queue import names
from worker.queue.names import DEFAULT_QUEUE, JOB_FUNCTION

# redis-py's socket timeout when a client names none (redis-py 8; None, no limit, before).
_DEFAULT_SOCKET_TIMEOUT_S = 5.0


def rq_timestamp(moment: datetime | None = None) -> str:
    """RQ's timestamp format: UTC, ISO 8601, microseconds, a trailing Z."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_hash(
    payload: dict[str, Any],
    *,
    queue: str,
    timeout: int,
    now: str,
    function: str = JOB_FUNCTION,
    description: str | None = None,
    result_ttl: int | None = None,
) -> dict[str, str]:
    """The RQ job hash of a job calling `function(payload)` (docs/protocol.md): the one
    encoding of a job, for `enqueue` and the backfill's transactions alike."""
    fields = {
        "data": json.dumps([function, None, [payload], {}], separators=(",", ":")),
        "origin": queue,
        "status": "queued",
        "created_at": now,
        "enqueued_at": now,
        "timeout": str(timeout),
    }
    if result_ttl is not None:
        fields["result_ttl"] = str(result_ttl)
    fields["description"] = description or f"{function}(...)"
    return fields


def enqueue(
    connection: redis.Redis,
    payload: dict[str, Any],
    *,
    queue: str = DEFAULT_QUEUE,
    timeout: int = 120,
    job_id: str | None = None,
    function: str = JOB_FUNCTION,
    created_at: str | None = None,
    replicas: int = 0,
    replicas_timeout_ms: int = 2000,
) -> str:
    """The job id, once Redis took the job, and `replicas` replicas with it (WAIT): a
    job only the master held would be lost with it in a failover. One not confirmed in
    time is sent again, the same transaction (id and `created_at`), a few times, then
    NotReplicated (docs/protocol.md, Replication)."""
    job_id = job_id or str(uuid.uuid4())
    now = created_at or rq_timestamp()
    fields = job_hash(payload, queue=queue, timeout=timeout, now=now, function=function)
    if not replicas:
        with connection.pipeline(transaction=True) as pipe:
            pipe.hset(names.rq_job_key(job_id), mapping=fields)
            pipe.rpush(names.rq_queue_key(queue), job_id)
            pipe.sadd(names.RQ_QUEUES, names.rq_queue_key(queue))
            pipe.execute()
        return job_id
    held = 0
    for attempt in range(_REPLICATED_ATTEMPTS):
        if attempt:
            time.sleep(backoff_s(attempt - 1))
        # MULTI ... EXEC, then WAIT, written out in one pipeline: WAIT counts the writes of
        # its own connection, and a transaction cannot hold it.
        with connection.pipeline(transaction=False) as pipe:
            pipe.execute_command("MULTI")
            pipe.hset(names.rq_job_key(job_id), mapping=fields)
            pipe.rpush(names.rq_queue_key(queue), job_id)
            pipe.sadd(names.RQ_QUEUES, names.rq_queue_key(queue))
            pipe.execute_command("EXEC")
            pipe.wait(replicas, replicas_timeout_ms)
            *_, done, held = pipe.execute()
        refused = [reply for reply in done if isinstance(reply, Exception)]
        if refused:
            raise refused[0]
        if held >= replicas:
            return job_id
    raise NotReplicated(job_id, held, replicas)


# Sends of one replicated enqueue before NotReplicated: about 7 s of backed-off tries, with
# a WAIT of its own in each.
_REPLICATED_ATTEMPTS = 4


class NotReplicated(redis.RedisError):
    """The master took the job, but too few replicas confirmed it in time: it is queued,
    and would be lost if the master failed now. Send the same enqueue again (same id and
    `created_at`; the job runs once), or report the job as not queued."""

    def __init__(self, job_id: str, held: int, wanted: int) -> None:
        super().__init__(
            f"job {job_id}: {held} of {wanted} replica(s) confirmed the enqueue in time"
        )
        self.job_id = job_id


def wait_for_reply(connection: redis.Redis, reply_to: str, timeout: float) -> dict[str, Any] | None:
    """Block on the reply list (BLPOP): no polling. None when nothing came in time.

    The wait is made of BLPOPs shorter than the client's socket timeout (redis-py's
    default is 5 s): one BLPOP that outlasts it fails with TimeoutError instead of
    returning nothing.
    """
    socket_timeout = connection.connection_pool.connection_kwargs.get("socket_timeout")
    step = max(0.1, (socket_timeout or _DEFAULT_SOCKET_TIMEOUT_S) / 2)
    until = time.monotonic() + timeout
    while (left := until - time.monotonic()) > 0:
        # At least 10 ms: BLPOP reads a timeout of 0 as "for ever".
        popped = connection.blpop([reply_to], timeout=max(0.01, min(left, step)))
        if popped is not None:
            return json.loads(popped[1])
    return None


def fetch_result(connection: redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = connection.get(names.result_key(job_id))
    return None if raw is None else json.loads(raw)
