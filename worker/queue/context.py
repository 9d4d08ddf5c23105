"""What a job runs against: built once when a worker process starts, in arq's manner.

The worker (worker.queue.rq_worker) builds one `JobContext` in its __init__ and installs
it; `jobs.scan` receives it as its first argument, with a `JobRun` naming the job it is
running. Nothing a job needs is looked up lazily from the environment.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from worker import engine as engines
from worker.queue.replies import Publisher
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.engine import Engine


@dataclass(frozen=True, slots=True)
class JobContext:
    settings: Settings
    engine: Engine
    connection: redis.Redis
    publisher: Publisher
    # host/<RQ worker name>: the `worker` field of every result this process publishes.
    worker: str
    backend: str
    model: str | None


@dataclass(frozen=True, slots=True)
class JobRun:
    """The job being run: its id and which enqueue of that id it is (see Publisher)."""

    job_id: str
    delivery: str
    enqueued_at: datetime | None = None

    def queue_wait_ms(self) -> float | None:
        if self.enqueued_at is None:
            return None
        enqueued = self.enqueued_at.replace(tzinfo=self.enqueued_at.tzinfo or UTC)
        return max(0.0, (datetime.now(UTC) - enqueued).total_seconds() * 1000.0)


_installed: JobContext | None = None


def build(settings: Settings, connection: redis.Redis, worker_name: str) -> JobContext:
    return JobContext(
        settings=settings,
        engine=engines.Engine(settings),
        connection=connection,
        publisher=Publisher(connection, settings),
        worker=f"{socket.gethostname()}/{worker_name}",
        backend=settings.backend_name,
        model=settings.model_names,
    )


def install(context: JobContext) -> None:
    global _installed
    _installed = context


def get() -> JobContext | None:
    """The context of this worker process, None outside one (e.g. in `qrw status`)."""
    return _installed


def current() -> JobContext:
    if _installed is None:
        raise RuntimeError("no job context: jobs run only inside `qrw worker`")
    return _installed
