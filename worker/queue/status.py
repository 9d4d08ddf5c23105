"""`qrw status`: what the fleet is doing, read from Redis alone.

Whether Redis would keep queued jobs across a restart (its persistence); queues with their
depth, running and failed jobs; the workers RQ knows, each with its state and current job;
and throughput over the last 1, 5 and 15 minutes, counted from
the results stream (its entry ids are millisecond timestamps, so no extra bookkeeping).
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker.queue import names, persistence, runtime
from worker.settings import Settings

_WINDOWS_MIN = (1, 5, 15)
# Enough to count 15 minutes of a busy fleet; a larger backlog is reported as "at least".
_STREAM_SCAN_LIMIT = 200_000


def collect(settings: Settings) -> dict[str, Any]:
    # A read timeout, and few retries: a status that hangs on a hung Redis, or retries an
    # unreachable one for most of a minute (redis-py's default: 10 tries of each command,
    # each connect tried 10 times too), would tell nobody anything in time.
    connection = runtime.connect(
        settings, socket_timeout=5, retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 2)
    )
    try:
        connection.ping()
    except redis.RedisError as exc:
        return {
            "redis": f"unreachable: {exc}",
            "persistence": None,
            "queues": [],
            "workers": [],
            "throughput": {},
        }
    return {
        "redis": "ok",
        "persistence": persistence.check(connection).to_dict(),
        "queues": _queues(connection, settings),
        "workers": _workers(connection),
        "throughput": _throughput(connection),
    }


def _queues(connection: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    known = {
        names.rq_queue_name(key.decode()) for key in connection.smembers(names.RQ_QUEUES) or ()
    }
    queues = list(dict.fromkeys([*settings.queues, *sorted(known)]))
    with connection.pipeline(transaction=False) as pipe:
        for name in queues:
            pipe.llen(names.rq_queue_key(name))
            pipe.zcard(names.rq_started_key(name))
            pipe.zcard(names.rq_failed_key(name))
        values = pipe.execute()
    return [
        {
            "queue": name,
            "queued": values[3 * i],
            "started": values[3 * i + 1],
            "failed": values[3 * i + 2],
        }
        for i, name in enumerate(queues)
    ]


def _workers(connection: redis.Redis) -> list[dict[str, Any]]:
    keys = sorted(k.decode() for k in connection.smembers(names.RQ_WORKERS) or ())
    workers = []
    for key in keys:
        fields = {k.decode(): v.decode() for k, v in connection.hgetall(key).items()}
        if not fields:
            continue  # expired between the two reads: it is gone
        workers.append(
            {
                "name": names.rq_worker_name(key),
                "state": fields.get("state", "?"),
                "current_job": fields.get("current_job") or None,
                "queues": fields.get("queues", ""),
                "last_heartbeat": fields.get("last_heartbeat"),
                "successful_jobs": int(fields.get("successful_job_count") or 0),
                "failed_jobs": int(fields.get("failed_job_count") or 0),
            }
        )
    return workers


def _throughput(connection: redis.Redis) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    oldest = now_ms - max(_WINDOWS_MIN) * 60_000
    entries = connection.xrange(names.RESULTS_STREAM, min=f"{oldest}-0", count=_STREAM_SCAN_LIMIT)
    stamps = [int(entry_id.decode().split("-")[0]) for entry_id, _ in entries]
    failed = [
        int(entry_id.decode().split("-")[0])
        for entry_id, fields in entries
        if fields.get(b"ok") == b"0"
    ]
    report: dict[str, Any] = {}
    for minutes in _WINDOWS_MIN:
        since = now_ms - minutes * 60_000
        done = sum(1 for s in stamps if s >= since)
        report[f"{minutes}m"] = {
            "jobs": done,
            "failed": sum(1 for s in failed if s >= since),
            "per_second": round(done / (minutes * 60), 3),
        }
    report["capped"] = len(entries) >= _STREAM_SCAN_LIMIT
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"redis: {report['redis']}"]
    if report.get("persistence"):
        lines.append(f"persistence: {_persistence_line(report['persistence'])}")
    if report["queues"]:
        lines += ["", f"{'queue':<20} {'queued':>8} {'started':>8} {'failed':>8}"]
        lines += [
            f"{q['queue']:<20} {q['queued']:>8} {q['started']:>8} {q['failed']:>8}"
            for q in report["queues"]
        ]
    lines += ["", f"workers: {len(report['workers'])}"]
    for w in report["workers"]:
        job = w["current_job"] or "-"
        lines.append(
            f"  {w['name']:<40} {w['state']:<10} job {job}  "
            f"ok {w['successful_jobs']} failed {w['failed_jobs']}"
        )
    if report["throughput"]:
        lines += ["", "finished jobs:"]
        for window in (f"{m}m" for m in _WINDOWS_MIN):
            row = report["throughput"][window]
            lines.append(
                f"  last {window:<4} {row['jobs']:>7} jobs ({row['per_second']}/s), "
                f"{row['failed']} failed"
            )
    return "\n".join(lines)


def _persistence_line(found: dict[str, Any]) -> str:
    return persistence.Persistence(
        persistence.Mode(found["mode"]), found["appendonly"], found["save"], found["detail"]
    ).summary()
