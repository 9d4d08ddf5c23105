"""The log event of a write waiting out a Redis outage names the outage: a full Redis (or a
replica) refuses writes, a lost connection is no refusal. Both read `redis_write_refused`
before, so an operator looking for a full Redis was sent to one that was unreachable."""

from __future__ import annotations

import redis
from structlog.testing import capture_logs

from worker.queue.replies import wait_for_writes


def test_a_full_redis_is_logged_as_a_refused_write() -> None:
    full = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'")
    with capture_logs() as logs:
        wait_for_writes("publish", full, 0)
    assert [entry["event"] for entry in logs] == ["redis_write_refused"]


def test_a_lost_connection_is_logged_as_redis_unreachable() -> None:
    with capture_logs() as logs:
        wait_for_writes("publish", redis.ConnectionError("Connection refused"), 0)
    assert [entry["event"] for entry in logs] == ["redis_unreachable"]
    assert logs[0]["during"] == "publish"
