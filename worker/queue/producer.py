"""The producer side of docs/protocol.md, in Python: exactly the Redis commands a
producer in any language sends. It does not import RQ, on purpose: what works here
works from Rust."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

from worker.queue import names
from worker.queue.names import DEFAULT_QUEUE, JOB_FUNCTION


def rq_timestamp(moment: datetime | None = None) -> str:
    """RQ's timestamp format: UTC, ISO 8601, microseconds, a trailing Z."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def enqueue(
    connection: redis.Redis,
    payload: dict[str, Any],
    *,
    queue: str = DEFAULT_QUEUE,
    timeout: int = 120,
    job_id: str | None = None,
    function: str = JOB_FUNCTION,
) -> str:
    job_id = job_id or str(uuid.uuid4())
    now = rq_timestamp()
    with connection.pipeline(transaction=True) as pipe:
        pipe.hset(
            names.rq_job_key(job_id),
            mapping={
                "data": json.dumps([function, None, [payload], {}], separators=(",", ":")),
                "origin": queue,
                "status": "queued",
                "created_at": now,
                "enqueued_at": now,
                "timeout": str(timeout),
                "description": f"{function}(...)",
            },
        )
        pipe.rpush(names.rq_queue_key(queue), job_id)
        pipe.sadd(names.RQ_QUEUES, names.rq_queue_key(queue))
        pipe.execute()
    return job_id


def wait_for_reply(connection: redis.Redis, reply_to: str, timeout: float) -> dict[str, Any] | None:
    """Block on the reply list (BLPOP): no polling. None when nothing came in time."""
    popped = connection.blpop([reply_to], timeout=timeout)
    return None if popped is None else json.loads(popped[1])


def fetch_result(connection: redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = connection.get(names.result_key(job_id))
    return None if raw is None else json.loads(raw)
