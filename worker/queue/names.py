"""Every Redis key name this service reads or writes, RQ's included: one module, so a
rename is one diff and a review can see every namespace we touch.

The producer (the Rust side) and ops rely on these: extend, never rename.
"""

from __future__ import annotations

DEFAULT_QUEUE = "qr"
JOB_FUNCTION = "jobs.scan"
ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION})

# Ours.
RESULTS_STREAM = "qrw:results"
# Jobs whose id is unusable as a key (so no result can be stored under it) and job hashes
# that cannot be read at all: one entry each, so nothing a producer enqueues vanishes.
DEAD_LETTER_STREAM = "qrw:dead-letter"
# Reply lists a producer may name in `reply_to` all live under this prefix, so a payload can
# never make a worker write into another application's keys.
REPLY_PREFIX = "qrw:reply:"


def result_key(job_id: str) -> str:
    return f"qrw:result:{job_id}"


def delivery_key(job_id: str) -> str:
    """Which enqueue of `job_id` the stored result belongs to (see publish.lua)."""
    return f"qrw:delivery:{job_id}"


# RQ's (RQ >= 2.4, < 4; verified against 3.0.0). We write the first three as a producer does
# and read the rest for status and metrics.
RQ_QUEUES = "rq:queues"
RQ_WORKERS = "rq:workers"


def rq_job_key(job_id: str) -> str:
    return f"rq:job:{job_id}"


def rq_queue_key(queue: str) -> str:
    return f"rq:queue:{queue}"


def rq_started_key(queue: str) -> str:
    """RQ 3's started-job registry ("work in progress")."""
    return f"rq:wip:{queue}"


def rq_failed_key(queue: str) -> str:
    return f"rq:failed:{queue}"


def rq_queue_workers_key(queue: str) -> str:
    return f"rq:workers:{queue}"


def rq_worker_key(name: str) -> str:
    return f"rq:worker:{name}"
