"""Queue overhead and throughput, measured end to end through a real Redis and real workers.

    python -m worker.bench.queue [--jobs 200] [--latency-jobs 60] [--out docs/benchmarks.md]

Starts its own redis-server on a free port, writes generated 2 MP digital invoices to a
temporary folder (file:// references), and for each worker class (fork, simple) and
worker count (1, 2) starts `qrw worker`, then measures:
- per-job latency, one job at a time: enqueue -> job start (`queue_wait`), and the whole
  round trip enqueue -> reply received, minus the job's own work, as the per-job overhead;
- throughput: a burst of jobs (single-image, and batches of 10) enqueued at once, images
  per second from the first enqueue to the last reply; the median of three bursts.
The producer is the documented raw-Redis protocol (worker.queue.producer).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

from models.synth import digital_invoice
from worker.bench.report import machine_line, percentile, write_section
from worker.harness import Pool, free_port, local_redis
from worker.queue import names, producer

COMMAND = "python -m worker.bench.queue"


def start_workers(url: str, root: Path, queue: str, count: int, kind: str) -> Pool:
    env = {
        "REDIS_URL": url,
        "QRW_FILE_ROOTS": str(root),
        "QRW_WORKER_CLASS": kind,
        "QRW_LOG_LEVEL": "warning",
        # Metrics on, as in production, on a port no other pool holds.
        "QRW_METRICS_PORT": str(free_port()),
    }
    return Pool(env, queue, count)


def collect(client: redis.Redis, reply_to: str, count: int) -> list[dict[str, Any]]:
    results = []
    while len(results) < count:
        popped = client.blpop([reply_to], timeout=60)
        if popped is None:
            raise TimeoutError(f"{count - len(results)} results missing")
        results.append(json.loads(popped[1]))
    return results


def latency(client: redis.Redis, queue: str, refs: list[str], jobs: int) -> dict[str, float]:
    waits, overheads, trips = [], [], []
    for i in range(jobs):
        reply_to = names.reply_key(str(uuid.uuid4()))
        started = time.perf_counter()
        producer.enqueue(client, {"image": refs[i % len(refs)], "reply_to": reply_to}, queue=queue)
        result = collect(client, reply_to, 1)[0]
        trip = (time.perf_counter() - started) * 1000.0
        trips.append(trip)
        waits.append(result["timings_ms"]["queue_wait"])
        overheads.append(trip - result["timings_ms"]["total"])
    return {
        "queue_wait_median_ms": percentile(waits, 50),
        "queue_wait_p95_ms": percentile(waits, 95),
        "round_trip_median_ms": percentile(trips, 50),
        "overhead_median_ms": percentile(overheads, 50),
        "overhead_p95_ms": percentile(overheads, 95),
    }


def throughput(client: redis.Redis, queue: str, refs: list[str], images: int, batch: int) -> float:
    reply_to = names.reply_key(str(uuid.uuid4()))
    chunks = [
        [refs[(start + k) % len(refs)] for k in range(batch)] for start in range(0, images, batch)
    ]
    started = time.perf_counter()
    for chunk in chunks:
        payload = {"images": chunk} if batch > 1 else {"image": chunk[0]}
        producer.enqueue(client, {**payload, "reply_to": reply_to}, queue=queue)
    results = collect(client, reply_to, len(chunks))
    elapsed = time.perf_counter() - started
    assert all(r["ok"] for r in results), "a benchmark job failed"
    return images / elapsed


def measure(
    url: str,
    client: redis.Redis,
    root: Path,
    refs: list[str],
    kind: str,
    count: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    queue = f"bench-{kind}-{count}"
    workers = start_workers(url, root, queue, count, kind)
    try:
        row: dict[str, Any] = {
            "worker_class": kind,
            "workers": count,
            "ready_s": workers.wait_ready(client, timeout=60),
        }
        latency(client, queue, refs, 10)  # warm the path
        row |= latency(client, queue, refs, args.latency_jobs)
        # Median of three bursts: one burst is at the mercy of a shared machine.
        for key, batch in (("images_per_s_single", 1), ("images_per_s_batch10", 10)):
            bursts = [throughput(client, queue, refs, args.jobs, batch) for _ in range(3)]
            row[key] = float(np.median(bursts))
        return row
    finally:
        workers.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="images per throughput burst")
    parser.add_argument("--latency-jobs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is required", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        refs = []
        for seed in range(20):
            path = root / f"invoice-{seed}.jpg"
            path.write_bytes(digital_invoice(4000 + seed, fmt="jpeg").data)
            refs.append(f"file://{path}")
        rows = []
        with local_redis() as url:
            client = redis.Redis.from_url(url)
            for kind in ("fork", "simple"):
                for count in (1, 2):
                    rows.append(measure(url, client, root, refs, kind, count, args))
                    print(json.dumps(rows[-1]), flush=True)
    text = render(rows, args)
    print(text)
    if args.out:
        write_section(args.out, "queue", text)
        args.out.with_name("benchmarks-queue.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def base(kind: str, key: str) -> float:
        return next(r[key] for r in rows if r["worker_class"] == kind and r["workers"] == 1)

    lines = [
        "## Queue: overhead per job, and throughput with 1 and 2 worker processes",
        "",
        f"Command: `{COMMAND} --jobs {args.jobs} --latency-jobs {args.latency_jobs}`  ",
        f"Machine: {machine_line()}",
        "",
        "Loopback Redis started by the benchmark; generated 2 MP digital JPEG invoices read",
        "through `file://`; producer = the raw-Redis protocol. `queue wait` is enqueue to job",
        "start (measured by the job from RQ's `enqueued_at`); `overhead` is the round trip",
        "enqueue -> reply received, minus the job's own time: everything the queue adds.",
        "Speed-up is images/s against 1 worker of the same class, in the same run.",
        "",
        "| worker class | workers | ready s | queue wait median / p95 ms "
        "| overhead median / p95 ms | round trip median ms | images/s, 1 per job | speed-up "
        "| images/s, 10 per job | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        single = r["images_per_s_single"] / base(r["worker_class"], "images_per_s_single")
        batch = r["images_per_s_batch10"] / base(r["worker_class"], "images_per_s_batch10")
        lines.append(
            f"| {r['worker_class']} | {r['workers']} | {r['ready_s']:.2f} "
            f"| {r['queue_wait_median_ms']:.1f} / {r['queue_wait_p95_ms']:.1f} "
            f"| {r['overhead_median_ms']:.1f} / {r['overhead_p95_ms']:.1f} "
            f"| {r['round_trip_median_ms']:.1f} | {r['images_per_s_single']:.1f} | {single:.2f}x "
            f"| {r['images_per_s_batch10']:.1f} | {batch:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
