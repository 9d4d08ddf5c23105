"""What a worker process loads once and every job reuses: settings, engine, Redis."""

from __future__ import annotations

import os
import socket
from functools import cache

import redis

from worker.engine import Engine
from worker.settings import Settings


@cache
def settings() -> Settings:
    return Settings.from_env()


@cache
def engine() -> Engine:
    return Engine(settings())


@cache
def connection() -> redis.Redis:
    # redis-py pools notice a fork and reconnect in the child, so one per process is safe.
    return connect(settings().redis_url)


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=15,
        retry_on_timeout=True,
    )


def worker_name(rq_name: str | None = None) -> str:
    """host/worker: the RQ worker's name when known (a work-horse shares its worker's),
    the process id otherwise."""
    return f"{socket.gethostname()}/{rq_name or os.getpid()}"


def backend() -> str:
    """The detector runtime this process runs ("onnx", "torch"), or "classical"."""
    return settings().backend_name


def model() -> str | None:
    """The detector models in this process's cascade, e.g. "qr-det-small,qr-det-medium"."""
    return settings().model_names
