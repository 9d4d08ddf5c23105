"""Writing a finished job's result where the producer collects it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis

from worker.queue.names import RESULTS_STREAM, result_key
from worker.settings import Settings

_SCRIPT = (Path(__file__).with_name("publish.lua")).read_text()


def publish(
    connection: redis.Redis, document: dict[str, Any], settings: Settings, reply_to: str | None
) -> bool:
    """Store, stream and (when asked) push the result; False if it was already delivered.

    Redis restarts are ridden out with a few backed-off tries; past them the error
    propagates so RQ records the job as failed and runs it again.
    """
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    job_id = str(document["job_id"])
    keys = [result_key(job_id), RESULTS_STREAM, *([reply_to] if reply_to else [])]
    args = [
        body,
        settings.result_ttl,
        settings.results_stream_maxlen,
        job_id,
        "1" if document.get("ok") else "0",
    ]
    for attempt in range(5):
        try:
            return bool(connection.eval(_SCRIPT, len(keys), *keys, *args))
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == 4:
                raise
            time.sleep(0.5 * 2**attempt)
    return False


class Publisher:
    """Publishes results for one worker process; built once, at worker start, into the
    job context. `delivery` identifies one enqueue of a job: the same for every run of
    that job, different when a producer reuses the id for a new job."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings

    def publish(
        self, document: dict[str, Any], reply_to: str | None, delivery: str | None = None
    ) -> bool:
        return publish(self.connection, document, self.settings, reply_to)
