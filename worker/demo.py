"""`qrw demo`: the main job end to end on one machine, then everything stopped.

A Redis (REDIS_URL when set, otherwise a redis-server started on a free port), a pool
of workers, sample invoices generated into a folder and sent through the queue as
file:// references, and the results printed with their timing breakdowns.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from worker.console import IMAGE_SUFFIXES, print_job_results
from worker.harness import NotStarted, Pool, local_redis
from worker.queue import names, producer, runtime
from worker.settings import Settings


def run(settings: Settings, samples: Path, count: int, workers: int) -> int:
    samples = samples.resolve()
    refs = _samples(samples, count)
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL") or stack.enter_context(local_redis())
        queue = f"demo-{uuid.uuid4().hex[:8]}"
        env = {
            "REDIS_URL": url,
            "QRW_FILE_ROOTS": str(samples),
            "QRW_LOG_LEVEL": os.environ.get("QRW_LOG_LEVEL", "warning"),
            # A pool already on this host holds the default port, and a pool refuses a port
            # it cannot take: the demo runs without metrics unless asked.
            "QRW_METRICS_PORT": os.environ.get("QRW_METRICS_PORT", "0"),
        }
        # The pool's warnings reach the terminal, as `qrw worker` run by hand shows them.
        pool = Pool(env, queue, workers, "inherit")
        stack.callback(pool.stop)
        connection = runtime.connect(settings.replace(redis_url=url))
        try:
            pool.wait_ready(connection, timeout=60)
        except NotStarted as exc:
            raise SystemExit(f"the workers did not start: {exc}") from exc
        print(f"redis {url}, queue {queue}, {workers} worker(s), {len(refs)} invoices", flush=True)
        reply_to = f"{names.REPLY_PREFIX}{uuid.uuid4()}"
        for ref in refs:
            producer.enqueue(connection, {"image": ref, "reply_to": reply_to}, queue=queue)
        results: list[dict[str, Any]] = []
        until = time.monotonic() + 120
        while len(results) < len(refs) and time.monotonic() < until:
            reply = producer.wait_for_reply(connection, reply_to, timeout=5)
            if reply is not None:
                results.append(reply)
        print_job_results(sorted(results, key=lambda r: str(r.get("image"))))
        read = sum(len(r.get("codes") or []) for r in results)
        print(f"{len(results)}/{len(refs)} jobs answered, {read} codes read", flush=True)
        return 0 if len(results) == len(refs) else 1


def _samples(folder: Path, count: int) -> list[str]:
    existing = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not existing:
        from models.synth import sample_set

        folder.mkdir(parents=True, exist_ok=True)
        for sample in sample_set(1, count, "mixed"):
            (folder / f"{sample.name}.{sample.extension}").write_bytes(sample.data)
        existing = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [f"file://{path}" for path in existing]
