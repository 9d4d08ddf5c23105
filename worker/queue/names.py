"""Every Redis key name this service reads or writes, RQ's included: one module, so a
rename is one diff and a review can see every namespace we touch.

The producer (the Rust side) and ops rely on these: extend, never rename.
"""

from __future__ import annotations

DEFAULT_QUEUE = "qr"
JOB_FUNCTION = "jobs.scan"
ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION})

# Ours: every key we write starts with this.
PREFIX = "qrw:"
RESULTS_STREAM = "qrw:results"
# Jobs whose id is unusable as a key (so no result can be stored under it), job hashes
# that cannot be read at all, and ids popped again after their job started or ended
# (`duplicate_job`): one entry each, so nothing a producer enqueues vanishes silently.
DEAD_LETTER_STREAM = "qrw:dead-letter"
# Reply lists a producer may name in `reply_to` all live under this prefix, so a payload can
# never make a worker write into another application's keys.
REPLY_PREFIX = "qrw:reply:"


def reply_key(name: str) -> str:
    """A reply list in our namespace, e.g. reply_key(str(uuid4()))."""
    return f"{REPLY_PREFIX}{name}"


def result_key(job_id: str) -> str:
    return f"qrw:result:{job_id}"


# Our one field in RQ's job hash: how many times this enqueue entered RQ's failed registry
# (worker.queue.job). A requeue from there runs the job's next round, a new delivery.
JOB_ROUND_FIELD = "qrw_round"


def delivery_key(job_id: str) -> str:
    """Which enqueue of `job_id` the stored result belongs to (see publish.lua)."""
    return f"qrw:delivery:{job_id}"


# RQ's (RQ >= 2.4, < 4; verified against 3.0.0). We write the job hash, the queue list and
# RQ_QUEUES as a producer does (worker.queue.producer) and read the rest for status and
# metrics; RQ itself builds the same names inside its own code.
RQ_PREFIX = "rq:"
RQ_QUEUES = "rq:queues"  # a set of queue keys (rq:queue:<queue>)
RQ_WORKERS = "rq:workers"  # a set of worker keys (rq:worker:<name>)
RQ_JOB_PREFIX = "rq:job:"  # + the id; as bytes for ids that are not text (hostile tests)
RQ_QUEUE_PREFIX = "rq:queue:"
RQ_WORKER_PREFIX = "rq:worker:"


def rq_job_key(job_id: str) -> str:
    return f"{RQ_JOB_PREFIX}{job_id}"


def rq_queue_key(queue: str) -> str:
    return f"{RQ_QUEUE_PREFIX}{queue}"


def rq_queue_name(key: str) -> str:
    """The queue a member of RQ_QUEUES names."""
    return key.removeprefix(RQ_QUEUE_PREFIX)


def rq_started_key(queue: str) -> str:
    """RQ 3's started-job registry ("work in progress")."""
    return f"rq:wip:{queue}"


def rq_failed_key(queue: str) -> str:
    return f"rq:failed:{queue}"


def rq_queue_workers_key(queue: str) -> str:
    return f"rq:workers:{queue}"


def rq_worker_key(name: str) -> str:
    return f"{RQ_WORKER_PREFIX}{name}"


def rq_worker_name(key: str) -> str:
    """The worker a member of RQ_WORKERS names."""
    return key.removeprefix(RQ_WORKER_PREFIX)


# Backfills (worker/backfill): one hash of state per run, the jobs it has in Redis, and the
# reply list its workers push results to (under REPLY_PREFIX, like every reply list).
BACKFILLS = "qrw:backfills"  # a set of run names


def backfill_key(name: str) -> str:
    """The run's state: a hash (see worker.backfill.state for its fields)."""
    return f"qrw:backfill:{name}"


def backfill_lease_key(name: str) -> str:
    """Who is driving the run now: one backfill process at a time holds it (a TTL lease)."""
    return f"qrw:backfill:{name}:lease"


def backfill_inflight_key(name: str) -> str:
    """job id -> the objects of that job (JSON), for every job of the run still in Redis."""
    return f"qrw:backfill:{name}:inflight"


def backfill_reply_key(name: str) -> str:
    """Where the run's workers push results; drained into the output as they arrive."""
    return f"{REPLY_PREFIX}backfill:{name}"


def backfill_driver_key(name: str) -> str:
    """The run's last driver and when it last renewed its lease (a hash, kept after the lease
    lapses): what `qrw backfill status` says of a run whose backfill process died."""
    return f"qrw:backfill:{name}:driver"


def backfill_seen_prefix(name: str) -> str:
    """The objects the run has enqueued, while its manifest is read: hashes named this and a
    bucket number (worker.backfill.seen)."""
    return f"qrw:backfill:{name}:seen:"
