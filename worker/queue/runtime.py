"""Redis connections for the queue's processes (worker, supervisor, CLI).

What a job runs against is built once per worker process: see worker.queue.context.
"""

from __future__ import annotations

import redis


def connect(url: str) -> redis.Redis:
    # redis-py pools notice a fork and reconnect in the child, so one per process is safe.
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=15,
        retry_on_timeout=True,
    )
