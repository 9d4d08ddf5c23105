"""Backfill at scale, measured end to end: real Redis, real workers, moto's S3 over HTTP.

    python -m worker.bench.backfill [--quick] [--out docs/benchmarks.md]

Every run starts its own redis-server (worker.harness.local_redis), `qrw worker` processes
serving `qr,qr-backfill`, and drives `qrw backfill` as a subprocess, the way an operator
does. It measures:
1. throughput: the same generated digital invoices (hard links of a few dozen 2 MP JPEGs
   in a file root), processed as plain queue jobs of K images (worker.queue.producer) and
   as a backfill with the same two workers and K, runs interleaved and repeated;
2. listing and enqueue alone, with the workers stopped, over 10,000 and 100,000 objects in
   moto's S3 server: listing alone (`--dry-run`), then the whole run with a stand-in that
   answers each job at once (no fetch, no decode) so only the backfill's own cost is left:
   objects/s, the backfill process's peak RSS (VmHWM) and Redis's `used_memory` peak;
   and with nothing answering, how much the run put in Redis before `--max-in-flight`
   stopped it;
3. resume: the backfill killed with SIGKILL half-way, then `qrw backfill resume`: seconds
   until it enqueues again, and the output checked to hold every object exactly once;
4. live jobs while a backfill keeps every worker busy: round trip and queue wait p50/p95
   of single-image jobs on `qr`, without a backfill and with backfills of two `--batch`;
5. dedup: what the set of enqueued objects (worker.backfill.seen) costs Redis per object and
   the driver per lookup, filled as 10^8 objects fill it (the same objects per hash, on
   fewer hashes) and as a small run does, and how long dropping it takes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from models.synth import digital_invoice
from worker import harness, procfs
from worker.backfill import Options
from worker.backfill import seen as dedup_set
from worker.backfill.runner import ENQUEUE_MAX_JOBS
from worker.bench.report import machine_line, percentile, write_section
from worker.harness import NotStarted, Pool, free_port, local_redis, moto_s3
from worker.queue import names, producer

COMMAND = "python -m worker.bench.backfill"
LIVE_QUEUE = names.DEFAULT_QUEUE
BACKFILL_QUEUE = Options().queue
WORKERS = 2
BUCKET = "archive"
DISTINCT_IMAGES = 40  # generated once; every object is a hard link to one of them
LIVE_IN_FLIGHT = 256  # --max-in-flight of the backfill that keeps the workers busy


@dataclass(frozen=True)
class Scale:
    images: int  # objects per throughput run
    pairs: int  # throughput: (queue, backfill) pairs, interleaved
    small: int  # objects in the small S3 archive
    large: int  # objects in the large one
    resume_objects: int
    live_jobs: int  # live jobs sampled per latency scenario
    live_objects: int  # objects of the backfill that keeps the workers busy
    listing_in_flight: int = 64  # --max-in-flight of the listing runs (--batch 10)
    resume_rate: int = 200  # images/s of the run killed half-way
    # dedup: hashes of the set filled as at 10^8 objects (2^bits of them), and a small run's
    # objects on the real number of hashes.
    dedup_bits: int = 14
    dedup_small: int = 100_000


# Throughput: many short pairs rather than a few long runs. This machine is shared and its
# speed drifts by 20% within minutes; the two runs of a pair are adjacent in time, so the
# median of the per-pair ratios is what survives the drift.
FULL = Scale(4000, 7, 10_000, 100_000, 3000, 60, 12_000)
QUICK = Scale(1000, 1, 1_000, 10_000, 400, 12, 3000)
SMOKE = Scale(
    60, 1, 100, 300, 300, 3, 400, listing_in_flight=4, resume_rate=50, dedup_bits=6,
    dedup_small=1000,
)  # fmt: skip
SECTIONS = ("throughput", "listing", "resume", "latency", "dedup")
# A run of this many objects is what the dedup section's fill stands for.
DEDUP_RUN = 10**8


@dataclass
class Bench:
    """One throwaway Redis, the folders, and the environment every subprocess gets."""

    url: str
    base: Path
    endpoint: str | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)

    @property
    def files(self) -> Path:
        return self.base / "files"

    @property
    def out(self) -> Path:
        return self.base / "out"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "REDIS_URL": self.url,
            "QRW_FILE_ROOTS": f"{self.files}:{self.out}",
            "QRW_S3_BUCKETS": BUCKET,
            "QRW_QUEUES": f"{LIVE_QUEUE},{BACKFILL_QUEUE}",
            "QRW_LOG_LEVEL": "warning",
            "QRW_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            # Metrics on, as in production, on a port no other pool holds.
            "QRW_METRICS_PORT": str(free_port()),
        }
        if self.endpoint:
            env |= {
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        return env | extra

    def spawn(self, label: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{label}.log"
        process = harness.spawn([sys.executable, *argv], self.env(**env), log, append=True)
        self.procs.append(process)
        return process

    def log_tail(self, label: str, lines: int = 15) -> str:
        path = self.logs / f"{label}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        harness.stop(*(pool.process for pool in self.pools), *reversed(self.procs))
        self.pools.clear()
        self.procs.clear()


@contextlib.contextmanager
def bench_redis(base: Path, endpoint: str | None = None) -> Iterator[Bench]:
    """A fresh Redis for each measurement: its `used_memory_peak` is then the run's."""
    with local_redis() as url:
        bench = Bench(url, base, endpoint)
        bench.out.mkdir(parents=True, exist_ok=True)
        bench.files.mkdir(exist_ok=True)
        try:
            yield bench
        finally:
            bench.stop_all()


def start_workers(bench: Bench, count: int = WORKERS) -> Pool:
    # No --queues: QRW_QUEUES (bench.env) names the live queue and the backfill's.
    bench.logs.mkdir(parents=True, exist_ok=True)
    pool = Pool(bench.env(), None, count, bench.logs / "workers.log")
    bench.pools.append(pool)
    try:
        pool.wait_ready(bench.client, timeout=90, queue=BACKFILL_QUEUE)
    except NotStarted as exc:
        raise RuntimeError(f"workers did not start:\n{bench.log_tail('workers')}") from exc
    return pool


def backfill(bench: Bench, label: str, *args: str) -> subprocess.Popen[bytes]:
    return bench.spawn(label, ["-m", "worker.cli", "backfill", *args])


def finish(
    bench: Bench,
    process: subprocess.Popen[bytes],
    label: str,
    timeout: float,
    every: Callable[[], object] | None = None,
) -> float:
    """Wait for the process (calling `every` each 50 ms meanwhile); its CPU seconds.

    Not more often: the benchmark's own polling runs on the cores the workers and the
    backfill share, and the plain-queue run it is compared with polls nothing."""
    deadline, cpu = time.perf_counter() + timeout, math.nan
    while process.returncode is None:  # None: not reaped yet (by a poll())
        pid, code, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(code)
            cpu = usage.ru_utime + usage.ru_stime
            break
        if time.perf_counter() > deadline:
            process.kill()
            raise RuntimeError(f"{label} ran past {timeout:.0f} s:\n{bench.log_tail(label)}")
        if every is not None:
            every()
        time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(f"{label} exited {process.returncode}:\n{bench.log_tail(label)}")
    return cpu


def status(bench: Bench, name: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "backfill", "status", name, "--json"],
        env=bench.env(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


# -- inputs --------------------------------------------------------------------------------


def make_images(bench: Bench, count: int, folder: str) -> list[str]:
    """`count` distinct objects: hard links (distinct paths, hence distinct keys and job
    ids) to a few generated invoices, so thousands of objects cost seconds to make."""
    originals = bench.base / "originals"
    if not originals.exists():
        originals.mkdir()
        for seed in range(DISTINCT_IMAGES):
            data = digital_invoice(7000 + seed, fmt="jpeg").data
            (originals / f"invoice-{seed}.jpg").write_bytes(data)
    target = bench.files / folder
    target.mkdir(parents=True, exist_ok=True)
    refs = []
    for i in range(count):
        path = target / f"{i:07d}.jpg"
        if not path.exists():
            os.link(originals / f"invoice-{i % DISTINCT_IMAGES}.jpg", path)
        refs.append(f"file://{path}")
    return refs


def manifest(bench: Bench, refs: list[str], label: str) -> Path:
    path = bench.base / f"{label}.txt"
    path.write_text("".join(f"{ref}\n" for ref in refs))
    return path


# -- sampling a run ------------------------------------------------------------------------


class Sampler:
    """Polls, every 50 ms, Redis's used memory and a process's peak RSS (VmHWM, which
    the kernel keeps: the last read before the process exits is its lifetime peak)."""

    def __init__(self, client: redis.Redis, pid: int | None = None) -> None:
        self.client, self.pid = client, pid
        self.redis_peak = self.redis_base = int(client.info("memory")["used_memory"])
        self.rss_peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.redis_peak = max(self.redis_peak, int(self.client.info("memory")["used_memory"]))
        if self.pid is not None:
            self.rss_peak_kb = max(self.rss_peak_kb, procfs.status_kib(self.pid, "VmHWM") or 0)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()


def output_lines(out: Path) -> Iterator[dict[str, Any]]:
    """Every output line, read back the way users read them (worker.backfill.output)."""
    from worker.backfill.output import open_output
    from worker.settings import Settings

    return open_output(f"file://{out}", Settings.from_env({})).iter_lines()


def output_keys(out: Path) -> Counter[str]:
    """The object keys of every output line, with multiplicity."""
    return Counter(line["key"] for line in output_lines(out))


def lines_written(out: Path) -> int:
    """Lines in the parts written so far (each part appears whole: written then renamed)."""
    count = 0
    for part in out.glob("part-*.jsonl.gz"):
        with contextlib.suppress(OSError, EOFError), gzip.open(part, "rb") as data:
            count += sum(1 for line in data if line.strip())
    return count


def expected_key(ref: str) -> str:
    return ref.removeprefix("file://") if ref.startswith("file://") else ref.split("/", 3)[3]


# -- 1. throughput -------------------------------------------------------------------------


def queue_run(bench: Bench, refs: list[str], batch: int) -> tuple[float, list[float]]:
    """The plain producer: every job enqueued at once, seconds to the last reply, and the
    scan time of every image (for the latency bound)."""
    client = bench.client
    reply_to = names.reply_key(str(uuid.uuid4()))
    chunks = [refs[i : i + batch] for i in range(0, len(refs), batch)]
    started = time.perf_counter()
    for chunk in chunks:
        producer.enqueue(client, {"images": chunk, "reply_to": reply_to}, queue=LIVE_QUEUE)
    per_image = []
    for _ in chunks:
        popped = client.blpop([reply_to], timeout=120)
        if popped is None:
            raise TimeoutError("a queue job got no result")
        result = json.loads(popped[1])
        if not result["ok"]:
            raise RuntimeError(f"a queue job failed: {result['error']}")
        per_image += [item["timings_ms"]["total"] for item in result["items"]]
    return time.perf_counter() - started, per_image


def backfill_run(
    bench: Bench, name: str, source: list[str], objects: int, *tuning: str, timeout: float = 600
) -> dict[str, float]:
    """The run's wall time from the command's start to its exit, its steady part (first job
    in flight to last job collected, as the queue run is timed), and its CPU seconds."""
    out, client = bench.out / name, bench.client
    inflight = names.backfill_inflight_key(name)
    window: dict[str, float] = {}

    def watch() -> None:
        if client.hlen(inflight):
            window.setdefault("first", time.perf_counter())
            window["last"] = time.perf_counter()

    started = time.perf_counter()
    process = backfill(bench, name, "start", name, *source, "--out", f"file://{out}", *tuning)
    cpu = finish(bench, process, name, timeout, watch)
    ended = time.perf_counter()
    seconds = ended - started
    keys = output_keys(out)
    if sum(keys.values()) != objects or len(keys) != objects:
        raise RuntimeError(f"{name}: {sum(keys.values())} lines, {len(keys)} keys, not {objects}")
    return {
        "seconds": seconds,
        "steady_s": window["last"] - window["first"],
        "cpu_s": cpu,
        # Before the first job is in flight (start-up, checks, the first listing) and after
        # the last is collected (summary.json, index.csv, exit): the workers idle meanwhile.
        "lead_s": window["first"] - started,
        "tail_s": ended - window["last"],
    }


def throughput(base: Path, scale: Scale, batch: int, workers: int = WORKERS) -> dict[str, Any]:
    # The same seconds of work per run whatever the worker count.
    images = scale.images * workers // WORKERS
    with bench_redis(base) as bench:
        refs = make_images(bench, images, "throughput")
        listed = manifest(bench, refs, "throughput")
        start_workers(bench, workers)
        queue_run(bench, refs[: min(200, len(refs))], batch)  # warm both workers
        runs: list[dict[str, Any]] = []
        per_image: list[float] = []
        for pair in range(scale.pairs):
            # Alternate which goes first, so a drift in the machine's load hits both.
            order = ("queue", "backfill") if pair % 2 == 0 else ("backfill", "queue")
            for kind in order:
                if kind == "queue":
                    seconds, times = queue_run(bench, refs, batch)
                    per_image += times
                    run = {"seconds": seconds, "steady_s": seconds}
                else:
                    run = backfill_run(
                        bench,
                        f"throughput-{pair}",
                        ["--manifest", str(listed)],
                        len(refs),
                        "--batch",
                        str(batch),
                    )
                runs.append({"pair": pair, "kind": kind, **run})
                print(
                    json.dumps(runs[-1] | {"images_per_s": len(refs) / run["seconds"]}), flush=True
                )

    def median(kind: str, key: str) -> float:
        return percentile([len(refs) / r[key] for r in runs if r["kind"] == kind], 50)

    def ratios(key: str) -> list[float]:
        by_pair = {(r["pair"], r["kind"]): r[key] for r in runs}
        return [by_pair[p, "queue"] / by_pair[p, "backfill"] for p in range(scale.pairs)]

    queue, whole, steady = (
        median("queue", "seconds"),
        median("backfill", "seconds"),
        median("backfill", "steady_s"),
    )
    per_pair, steady_per_pair = ratios("seconds"), ratios("steady_s")
    return {
        "images": len(refs),
        "batch": batch,
        "workers": workers,
        "runs": runs,
        "queue_images_per_s": queue,
        "backfill_images_per_s": whole,
        "backfill_steady_images_per_s": steady,
        # The verdict: the median of the per-pair ratios (drift between pairs cancels out).
        "ratio": percentile(per_pair, 50),
        "steady_ratio": percentile(steady_per_pair, 50),
        "ratio_of_medians": whole / queue,
        "ratios": per_pair,
        "steady_ratios": steady_per_pair,
        "backfill_cpu_ms_per_object": percentile(
            [r["cpu_s"] * 1000 / len(refs) for r in runs if r["kind"] == "backfill"], 50
        ),
        "scan_ms_median": percentile(per_image, 50),
        "scan_ms_p95": percentile(per_image, 95),
    }


# -- 2. listing and enqueue, workers stopped ----------------------------------------------


def make_objects(backend: Any, prefix: str, count: int) -> float:
    """Tiny objects written straight into the server's backend, from threads: the same
    objects a PUT makes, about 100x faster than PUTs through the server (which a 2-core
    machine serves at ~300/s); the backfill still lists them over HTTP."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()

    def put(first: int) -> None:
        for i in range(first, min(first + 1000, count)):
            backend.put_object(BUCKET, f"{prefix}{i:08d}.png", b"tiny-invoice-%08d" % i)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(0, count, 1000)))
    return time.perf_counter() - started


def make_inventory(backend: Any, prefix: str, count: int) -> str:
    """An S3 Inventory of the objects under `prefix`, as S3 writes one: a manifest.json and
    CSV.gz data files of 50,000 rows (Bucket, Key, Size, LastModifiedDate, ETag)."""
    keys = []
    for first in range(0, count, 50_000):
        rows = io.StringIO()
        writer = csv.writer(rows, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for i in range(first, min(first + 50_000, count)):
            key = f"{prefix}{i:08d}.png"
            stored = backend.get_object(BUCKET, key)
            modified = stored.last_modified.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            writer.writerow([BUCKET, key, stored.size, modified, stored.etag.strip('"')])
        keys.append(f"inventory/data/{first // 50_000:04d}.csv.gz")
        backend.put_object(BUCKET, keys[-1], gzip.compress(rows.getvalue().encode()))
    manifest = {
        "sourceBucket": BUCKET,
        "destinationBucket": f"arn:aws:s3:::{BUCKET}",
        "version": "2016-11-30",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
        "files": [{"key": key, "size": 0, "MD5checksum": ""} for key in keys],
    }
    backend.put_object(BUCKET, "inventory/manifest.json", json.dumps(manifest).encode())
    return f"s3://{BUCKET}/inventory/manifest.json"


def stand_in(url: str, queue_name: str = BACKFILL_QUEUE) -> int:
    """Answers each backfill job at once with the result a worker publishes for images
    in which no code was found, through the worker's own Publisher; no fetch, no decode."""
    from worker.engine import ScanResult
    from worker.queue.replies import Publisher
    from worker.queue.results import ImageResult, JobResult
    from worker.settings import Settings

    client = redis.Redis.from_url(url)
    publisher = Publisher(client, Settings.from_env())
    queue = names.rq_queue_key(queue_name)
    while True:
        popped = client.blpop([queue], timeout=1)
        if popped is None:
            continue
        job_id = popped[1].decode()
        data = client.hget(names.rq_job_key(job_id), "data")
        if data is None:
            continue
        payload = json.loads(data)[2][0]
        result = JobResult(job_id, "stand-in", "none", None, request_id=payload.get("request_id"))
        result.batch = True
        result.images = [
            ImageResult(ref, ScanResult(format="png", width=1, height=1, pages=1), 0.0)
            for ref in payload["images"]
        ]
        result.timings_ms = {"queue_wait": 0.0, "total": 0.0}
        publisher.publish(
            result.to_dict(),
            payload["reply_to"],
            job_id,
            result_ttl=payload.get("result_ttl"),
            stream=payload.get("stream", True),
        )
        client.delete(names.rq_job_key(job_id))


def listing(base: Path, scale: Scale, batch: int, max_in_flight: int) -> dict[str, Any]:
    tuning = ["--batch", str(batch), "--max-in-flight", str(max_in_flight)]
    rows: list[dict[str, Any]] = []
    with moto_s3((BUCKET,)) as (endpoint, backend):
        created = {
            count: make_objects(backend, f"objects-{count}/", count)
            for count in (scale.small, scale.large)
        }
        inventory = make_inventory(backend, f"objects-{scale.large}/", scale.large)
        for kind, count, source in (
            ("LIST", scale.small, ["--source", f"s3://{BUCKET}/objects-{scale.small}/"]),
            ("LIST", scale.large, ["--source", f"s3://{BUCKET}/objects-{scale.large}/"]),
            ("Inventory", scale.large, ["--manifest", inventory]),
        ):
            row: dict[str, Any] = {"source": kind, "objects": count, "create_s": created[count]}
            with bench_redis(base, endpoint) as bench:
                name = f"dry-{kind.lower()}-{count}"
                started = time.perf_counter()
                dry = backfill(
                    bench,
                    name,
                    "start",
                    name,
                    *source,
                    "--dry-run",
                    "--out",
                    f"file://{bench.out / name}",
                )
                row["dry_run_cpu_s"] = finish(bench, dry, name, 900)
                row["dry_run_s"] = time.perf_counter() - started
            with bench_redis(base, endpoint) as bench:
                bench.spawn("stand-in", ["-m", "worker.bench.backfill", "--stand-in", bench.url])
                name = f"listing-{kind.lower()}-{count}"
                out = bench.out / name
                with Sampler(bench.client) as sampler:
                    started = time.perf_counter()
                    process = backfill(
                        bench, name, "start", name, *source, "--out", f"file://{out}", *tuning
                    )
                    sampler.pid = process.pid
                    row["cpu_s"] = finish(bench, process, name, 1800)
                    row["run_s"] = time.perf_counter() - started
                keys = output_keys(out)
                row["lines"], row["distinct"] = sum(keys.values()), len(keys)
                # What stays after the run: result keys (none: the collector deletes them)
                # and delivery tokens, kept for the payload's result_ttl.
                client = bench.client
                row["result_keys"] = sum(
                    1 for _ in client.scan_iter(match=names.result_key("*"), count=1000)
                )
                row["redis_end_mb"] = (
                    int(client.info("memory")["used_memory"]) - sampler.redis_base
                ) / 2**20
                row["rss_peak_mb"] = sampler.rss_peak_kb / 1024
                row["redis_peak_mb"] = (sampler.redis_peak - sampler.redis_base) / 2**20
            rows.append(row)
            print(json.dumps(row), flush=True)
        # Two bounds over the same archive: what Redis holds follows --max-in-flight.
        stalled = [
            stopped_workers(base, endpoint, scale.large, batch, bound)
            for bound in (max_in_flight, scale.large // batch // 2)
        ]
    return {"batch": batch, "max_in_flight": max_in_flight, "rows": rows, "stalled": stalled}


def stopped_workers(
    base: Path, endpoint: str, count: int, batch: int, max_in_flight: int
) -> dict[str, Any]:
    """Nothing answers: the run must stop enqueueing at `--max-in-flight` jobs and stay."""
    with bench_redis(base, endpoint) as bench:
        name = "stalled"
        client = bench.client
        inflight = names.backfill_inflight_key(name)
        with Sampler(client) as sampler:
            started = time.perf_counter()
            process = backfill(
                bench,
                name,
                "start",
                name,
                "--source",
                f"s3://{BUCKET}/objects-{count}/",
                "--out",
                f"file://{bench.out / name}",
                "--batch",
                str(batch),
                "--max-in-flight",
                str(max_in_flight),
            )
            sampler.pid = process.pid
            while client.hlen(inflight) < max_in_flight:
                if process.poll() is not None or time.perf_counter() - started > 300:
                    raise RuntimeError(f"the run did not fill:\n{bench.log_tail(name)}")
                time.sleep(0.05)
            filled_s = time.perf_counter() - started
            time.sleep(5 if count >= 10_000 else 2)  # it must now wait, not list on
            jobs = client.hlen(inflight)
            queued = client.llen(names.rq_queue_key(BACKFILL_QUEUE))
            held = int(client.info("memory")["used_memory"]) - sampler.redis_base
            listed = status(bench, name).get("listed")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    row = {
        "objects": count,
        "max_in_flight": max_in_flight,
        "filled_s": filled_s,
        "jobs": jobs,
        "queued": queued,
        "listed": listed,
        "redis_mb": held / 2**20,
        "redis_peak_mb": (sampler.redis_peak - sampler.redis_base) / 2**20,
        "rss_peak_mb": sampler.rss_peak_kb / 1024,
    }
    print(json.dumps(row), flush=True)
    return row


# -- 3. resume -----------------------------------------------------------------------------


def kill_at(bench: Bench, process: subprocess.Popen[bytes], label: str, lines: int) -> int:
    """SIGKILL the backfill once the output holds `lines` lines; the lines it had then."""
    out, started = bench.out / "resume", time.perf_counter()
    while (written := lines_written(out)) < lines:
        if process.poll() is not None or time.perf_counter() - started > 600:
            raise RuntimeError(f"{label} ended before the kill:\n{bench.log_tail(label)}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    return written


def resumed(bench: Bench, label: str) -> tuple[subprocess.Popen[bytes], float]:
    """`qrw backfill resume`, and the seconds until it enqueued a job again (a job id new
    to the run's in-flight hash)."""
    client, inflight = bench.client, names.backfill_inflight_key("resume")
    before = set(client.hkeys(inflight))
    started = time.perf_counter()
    process = backfill(bench, label, "resume", "resume")
    while not set(client.hkeys(inflight)) - before:
        if process.poll() is not None or time.perf_counter() - started > 120:
            break  # ended (or failed) without a new enqueue: `finish` says which
        time.sleep(0.02)
    return process, time.perf_counter() - started


def resume(base: Path, scale: Scale, batch: int) -> dict[str, Any]:
    """Killed twice: resumed on the same machine (the dead holder's pid is checked, no
    wait), then as from another machine (the lease must lapse first)."""
    with bench_redis(base) as bench:
        refs = make_images(bench, scale.resume_objects, "resume")
        listed = manifest(bench, refs, "resume")
        start_workers(bench)
        client, name, count = bench.client, "resume", len(refs)
        out = bench.out / name
        first = backfill(
            bench,
            name,
            "start",
            name,
            "--manifest",
            str(listed),
            "--out",
            f"file://{out}",
            "--batch",
            str(batch),
            # Paced, so that a third of the way is a moment the benchmark can catch.
            "--rate",
            str(scale.resume_rate),
        )
        killed = [kill_at(bench, first, name, count // 3)]
        second, here_s = resumed(bench, "resume-here")
        killed.append(kill_at(bench, second, "resume-here", 2 * count // 3))
        # What a machine other than the dead driver's sees: a holder it cannot check.
        lease = names.backfill_lease_key(name)
        holder = client.get(lease)
        if holder is not None:
            client.set(
                lease, b"elsewhere.example:1:" + holder.split(b":")[-1], xx=True, keepttl=True
            )
        third, elsewhere_s = resumed(bench, "resume-elsewhere")
        started = time.perf_counter()
        finish(bench, third, "resume-elsewhere", 600)
        keys = output_keys(out)
        expected = Counter(expected_key(ref) for ref in refs)
        state = status(bench, name)
    return {
        "objects": count,
        "batch": batch,
        "rate": scale.resume_rate,
        "killed_at_lines": killed,
        "enqueueing_again_here_s": here_s,
        "enqueueing_again_elsewhere_s": elsewhere_s,
        "last_resume_s": elsewhere_s + time.perf_counter() - started,
        "lines": sum(keys.values()),
        "missing": sum((expected - keys).values()),
        "duplicates": sum(n - 1 for n in keys.values() if n > 1),
        "unexpected": sum((keys - expected).values()),
        "state": state.get("state"),
    }


# -- 4. live jobs while a backfill runs ---------------------------------------------------


def live_jobs(bench: Bench, ref: str, count: int) -> dict[str, float]:
    client, trips, waits, behind = bench.client, [], [], []
    for i in range(count):
        reply_to = names.reply_key(str(uuid.uuid4()))
        behind.append(client.llen(names.rq_queue_key(BACKFILL_QUEUE)))
        started = time.perf_counter()
        producer.enqueue(client, {"image": ref, "reply_to": reply_to}, queue=LIVE_QUEUE)
        reply = producer.wait_for_reply(client, reply_to, 120)
        if reply is None or not reply["ok"]:
            raise RuntimeError(f"live job {i}: {reply}")
        trips.append((time.perf_counter() - started) * 1000.0)
        waits.append(reply["timings_ms"]["queue_wait"])
        time.sleep(0.1 + 0.1 * (i % 3))  # live traffic arrives at its own pace
    return {
        "jobs": count,
        "round_trip_p50_ms": percentile(trips, 50),
        "round_trip_p95_ms": percentile(trips, 95),
        "round_trip_max_ms": max(trips),
        "queue_wait_p50_ms": percentile(waits, 50),
        "queue_wait_p95_ms": percentile(waits, 95),
        # Backfill jobs waiting when each live job came: above 0 means every worker was busy.
        "backfill_queued_min": min(behind),
    }


def latency(base: Path, scale: Scale, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for batch in (None, *batches):
        with bench_redis(base) as bench:
            refs = make_images(bench, scale.live_objects, "live")
            live_ref = make_images(bench, 1, "live-traffic")[0]
            start_workers(bench)
            row: dict[str, Any] = {"batch": batch}
            if batch is not None:
                name = f"live-{batch}"
                listed = manifest(bench, refs, name)
                # Far more in flight than the workers can finish between two collections,
                # so the backfill queue is never empty while live jobs are sampled.
                process = backfill(
                    bench,
                    name,
                    "start",
                    name,
                    "--manifest",
                    str(listed),
                    "--out",
                    f"file://{bench.out / name}",
                    "--batch",
                    str(batch),
                    "--max-in-flight",
                    str(LIVE_IN_FLIGHT),
                )
                client, started = bench.client, time.perf_counter()
                while client.llen(names.rq_queue_key(BACKFILL_QUEUE)) < WORKERS:
                    if process.poll() is not None or time.perf_counter() - started > 120:
                        raise RuntimeError(f"backfill did not fill: {bench.log_tail(name)}")
                    time.sleep(0.05)
            row |= live_jobs(bench, live_ref, scale.live_jobs)
            if batch is not None:
                row["backfill_still_running"] = process.poll() is None
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                # The backfill's own images, for the bound: scan time per image.
                scans = [
                    line["timings_ms"]["total"]
                    for line in output_lines(bench.out / name)
                    if line.get("timings_ms", {}).get("total") is not None
                ]
                row["backfill_objects_done"] = len(scans)
                row["scan_ms_median"] = percentile(scans, 50)
                row["scan_ms_p95"] = percentile(scans, 95)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# -- the report ----------------------------------------------------------------------------


def dedup(base: Path, scale: Scale) -> dict[str, Any]:
    """The set of enqueued objects against a real Redis, used as the runner uses it: marks
    looked up in one round trip per transaction of ENQUEUE_MAX_JOBS jobs of 10, and added in
    that transaction; then every object looked up again (a manifest naming it twice)."""
    per_hash = DEDUP_RUN / 2**dedup_set.BUCKET_BITS
    fills = [
        ("as at 10^8 objects", scale.dedup_bits, round(per_hash * 2**scale.dedup_bits)),
        ("small run", dedup_set.BUCKET_BITS, scale.dedup_small),
    ]
    chunk = ENQUEUE_MAX_JOBS * 10
    rows = []
    with bench_redis(base) as bench:
        client = bench.client
        config = client.config_get("hash-max-listpack-entries")
        for label, bits, objects in fills:
            client.flushall()
            empty = int(client.info("memory")["used_memory"])
            seen = dedup_set.Seen(client, f"dedup-{bits}", bucket_bits=bits)
            wall = cpu = 0.0
            for first in range(0, objects, chunk):
                batch = [_identity(n) for n in range(first, min(objects, first + chunk))]
                started, cpu_started = time.perf_counter(), time.process_time()
                marks = [seen.mark(text) for text in batch]
                if any(seen.contains(marks)):
                    raise RuntimeError("a new object was taken for one already enqueued")
                with client.pipeline(transaction=True) as pipe:
                    seen.add(pipe, marks)
                    pipe.execute()
                wall += time.perf_counter() - started
                cpu += time.process_time() - cpu_started
            used = int(client.info("memory")["used_memory"]) - empty
            # Every object once more: all of them must be found.
            started = time.perf_counter()
            for first in range(0, objects, chunk):
                names_again = [_identity(n) for n in range(first, min(objects, first + chunk))]
                if not all(seen.contains([seen.mark(text) for text in names_again])):
                    raise RuntimeError("an enqueued object was not found")
            lookup_wall = time.perf_counter() - started
            sample = client.randomkey()
            encoding = client.object("encoding", sample) if sample else None
            started = time.perf_counter()
            hashes = seen.clear()
            clear_s = time.perf_counter() - started
            rows.append(
                {
                    "label": label,
                    "bucket_bits": bits,
                    "hashes": hashes,
                    "objects": objects,
                    "per_hash": objects / max(1, hashes),
                    "redis_bytes": used,
                    "bytes_per_object": used / objects,
                    "add_us_per_object": wall / objects * 1e6,
                    "cpu_us_per_object": cpu / objects * 1e6,
                    "lookup_us_per_object": lookup_wall / objects * 1e6,
                    "encoding": encoding.decode() if isinstance(encoding, bytes) else encoding,
                    "clear_s": clear_s,
                    "left": len(list(client.scan_iter(match=f"{seen.prefix}*"))),
                }
            )
    listpack = config.get("hash-max-listpack-entries") if isinstance(config, dict) else None
    return {"rows": rows, "hash_max_listpack_entries": listpack, "chunk": chunk}


def render(results: dict[str, Any]) -> str:
    measured: dict[str, dict[str, str]] = results["measured"]
    runs = {(run["command"], run["machine"]) for run in measured.values()}
    if len(runs) == 1:
        ((command, machine),) = runs
        header = [f"Command: `{command}`  ", f"Machine: {machine}"]
    else:
        header = ["Measured in more than one run (`--only` re-runs a section):", ""]
        header += [
            f"- {key}: `{run['command']}`, {run['machine']}" for key, run in measured.items()
        ]
    lines = [
        "## Backfill: throughput against plain queue jobs, listing, resume, live jobs, "
        "objects named twice",
        "",
        *header,
        "",
        "Everything runs on the one machine: a loopback redis-server started per measurement,",
        f"{WORKERS} `qrw worker` processes serving `{LIVE_QUEUE},{BACKFILL_QUEUE}`, `qrw backfill` "
        "as a subprocess, moto's S3 server in the benchmark's process. On a 2-core machine the",
        "backfill process, the workers, Redis and moto share the same two cores.",
    ]
    for key, section in (
        ("throughput", _throughput_lines),
        ("throughput_1", _throughput_one_lines),
        ("listing", _listing_lines),
        ("resume", _resume_lines),
        ("latency", _latency_lines),
        ("dedup", _dedup_lines),
    ):
        if key in results:
            lines += ["", *section(results)]
    return "\n".join(lines)


def _throughput_lines(results: dict[str, Any]) -> list[str]:
    tp = results["throughput"]
    lines = [
        f"### Throughput: {tp['images']:,} digital 2 MP JPEG invoices, {tp['batch']} per job, "
        f"{tp['workers']} workers",
        "",
        "Plain queue = every job enqueued at once with the project's producer, timed from the "
        "first enqueue to the last reply. Backfill = `qrw backfill start --manifest` over the "
        "same files and workers: *whole* = from the command's start to its exit (Python start, "
        "checks, listing, enqueue, collecting, the parts, then `summary.json` and `index.csv` "
        "from what it collected); *steady* = from its first job in flight to its last one "
        "collected, timed as the queue run is; *lead* and *tail* = the seconds before and after "
        "it, when the workers have nothing of the run to do. Runs alternate, the two of a pair "
        "back to back, and each pair's ratio is taken on its own (this shared machine's speed "
        "drifts by a fifth within minutes). The backfill process shares the two cores with the "
        "two workers at its default CPU niceness (`QRW_BACKFILL_NICE=10`): it yields the "
        "cores to them, and when they keep both busy it gets about a tenth of one, which can "
        "be less than it needs (the slow pairs below).",
        "",
        "| pair | kind | seconds (whole) | images/s (whole) | seconds (steady) "
        "| images/s (steady) | lead s | tail s | backfill CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in tp["runs"]:
        extra = (
            f"{run['lead_s']:.2f} | {run['tail_s']:.2f} | {run['cpu_s']:.1f}"
            if "cpu_s" in run
            else "- | - | -"
        )
        lines.append(
            f"| {run['pair'] + 1} | {run['kind']} | {run['seconds']:.1f} "
            f"| {tp['images'] / run['seconds']:.1f} | {run['steady_s']:.1f} "
            f"| {tp['images'] / run['steady_s']:.1f} | {extra} |"
        )

    def verdict(ratio: float) -> str:
        return "meets" if ratio >= 0.95 else "misses"

    return [
        *lines,
        "",
        "Backfill images/s against the plain queue's, the median of the per-pair ratios: "
        f"whole **{tp['ratio']:.2f}x** ({verdict(tp['ratio'])} the 0.95x target; per pair "
        + ", ".join(f"{r:.2f}x" for r in tp["ratios"])
        + f"), steady **{tp['steady_ratio']:.2f}x** ({verdict(tp['steady_ratio'])} it; per pair "
        + ", ".join(f"{r:.2f}x" for r in tp["steady_ratios"])
        + f"). Medians of all runs: plain queue {tp['queue_images_per_s']:.1f} images/s, "
        f"backfill whole {tp['backfill_images_per_s']:.1f}, steady "
        f"{tp['backfill_steady_images_per_s']:.1f}. The backfill process used "
        f"{tp['backfill_cpu_ms_per_object']:.2f} ms of CPU per "
        f"object; the workers' scan took {tp['scan_ms_median']:.1f} ms per image (median; "
        f"p95 {tp['scan_ms_p95']:.1f} ms).",
    ]


def _throughput_one_lines(results: dict[str, Any]) -> list[str]:
    tp = results["throughput_1"]
    return [
        f"The same with **one worker** ({tp['images']:,} images, the same seconds of work per "
        "run): the backfill process now has the second core to itself, as in a deployment "
        "where it runs in its own pod. Backfill against plain queue, median of the per-pair "
        f"ratios: whole **{tp['ratio']:.2f}x** (per pair "
        + ", ".join(f"{r:.2f}x" for r in tp["ratios"])
        + f"), steady **{tp['steady_ratio']:.2f}x** (per pair "
        + ", ".join(f"{r:.2f}x" for r in tp["steady_ratios"])
        + f"); medians of all runs: plain queue {tp['queue_images_per_s']:.1f} images/s, "
        f"backfill whole {tp['backfill_images_per_s']:.1f}.",
    ]


def _listing_lines(results: dict[str, Any]) -> list[str]:
    ls = results["listing"]
    lines = [
        f"### Listing and enqueue, workers stopped (`--batch {ls['batch']} "
        f"--max-in-flight {ls['max_in_flight']}`)",
        "",
        "Tiny objects in moto's S3 server (written into its backend from threads: "
        + ", ".join(
            f"{r['objects']:,} in {r['create_s']:.1f} s"
            for r in ls["rows"]
            if r["source"] == "LIST"
        )
        + "; PUTs through the server manage ~300/s here), read over HTTP: listed with "
        "ListObjectsV2 (`--source`), or from an S3 Inventory of the larger prefix (`--manifest "
        "manifest.json`, CSV.gz data files of 50,000 rows, written as S3 writes them). "
        "`--dry-run` = listing alone. The full run's jobs are answered "
        "at once by a stand-in for the workers (the worker's own result publisher, no fetch, "
        "no decode), so the seconds are the backfill's own: listing, enqueue, collecting, "
        "writing the output. Peak RSS = VmHWM of the `qrw backfill` process; Redis = the "
        "peak of `used_memory` during the run, over the empty server's.",
        "",
        "| source | objects | dry-run s | objects/s listed | full run s | objects/s "
        "| backfill CPU s | lines (distinct) | backfill peak RSS MB | Redis used_memory peak MB "
        "| Redis after the run MB (result keys) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ls["rows"]:
        lines.append(
            f"| {r['source']} | {r['objects']:,} | {r['dry_run_s']:.1f} "
            f"| {r['objects'] / r['dry_run_s']:,.0f} "
            f"| {r['run_s']:.1f} | {r['objects'] / r['run_s']:,.0f} | {r['cpu_s']:.1f} "
            f"| {r['lines']:,} ({r['distinct']:,}) | {r['rss_peak_mb']:.0f} "
            f"| {r['redis_peak_mb']:.1f} | {r['redis_end_mb']:.1f} ({r['result_keys']:,}) |"
        )
    small_run, large_run = ls["rows"][0], ls["rows"][1]
    jobs_between = max(1, (large_run["objects"] - small_run["objects"]) // ls["batch"])
    per_job_after = (large_run["redis_end_mb"] - small_run["redis_end_mb"]) * 2**20 / jobs_between
    lines += [
        "",
        f"Peak RSS stays flat from {small_run['objects']:,} to {large_run['objects']:,} objects. "
        f"After a run, {large_run['result_keys']:,} result keys are left: the collector deletes "
        "each result from `qrw:result:<id>` as it writes it into a part, and only its delivery "
        f"token stays for the payload's `result_ttl` (600 s): about {per_job_after:.0f} bytes "
        "per job here, from the difference between the two runs. At a steady rate that levels "
        "off at (images/s / batch) x 600 s x that size; everything else is bounded by "
        "`--max-in-flight` (next table), not by the archive.",
    ]
    small, large = ls["stalled"]
    per_job = (
        (large["redis_mb"] - small["redis_mb"]) * 2**20 / max(1, large["jobs"] - small["jobs"])
    )
    lines += [
        "",
        f"With nothing answering (no workers, no stand-in), over the {small['objects']:,}-object "
        "archive: the run enqueues up to `--max-in-flight` jobs and then waits (measured a few "
        "seconds later). Redis = `used_memory` then, over the empty server's.",
        "",
        "| --max-in-flight | filled in s | jobs in Redis | queued | objects listed "
        "| Redis MB | backfill peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in ls["stalled"]:
        lines.append(
            f"| {st['max_in_flight']:,} | {st['filled_s']:.1f} | {st['jobs']:,} | {st['queued']:,} "
            f"| {st['listed'] or 0:,} | {st['redis_mb']:.1f} | {st['rss_peak_mb']:.0f} |"
        )
    return [
        *lines,
        "",
        f"Redis per in-flight job of {ls['batch']} references (the difference of the two rows): "
        f"**{per_job / 1024:.1f} KB**, i.e. {per_job / ls['batch']:.0f} bytes per object "
        "waiting (its job hash, the queue entry, and its objects in the run's in-flight hash).",
    ]


def _resume_lines(results: dict[str, Any]) -> list[str]:
    rs = results["resume"]
    first, second = rs["killed_at_lines"]
    return [
        f"### Resume after SIGKILL ({rs['objects']:,} objects, `--batch {rs['batch']} "
        f"--rate {rs['rate']}`, {WORKERS} workers)",
        "",
        f"The backfill process was killed with SIGKILL twice (output at {first:,} and "
        f"{second:,} lines) and resumed with `qrw backfill resume` each time. On the same "
        "machine (the dead driver's pid is checked, its lease taken over at once) it enqueued "
        f"again after **{rs['enqueueing_again_here_s']:.1f} s**; as from another machine (the "
        "lease's holder rewritten to a foreign host, so only its TTL can free it) after "
        f"**{rs['enqueueing_again_elsewhere_s']:.1f} s** (the lease lapses within 15 s of the "
        f"last renewal). Output: {rs['lines']:,} lines for {rs['objects']:,} objects, "
        f"{rs['missing']} missing, {rs['duplicates']} duplicated, {rs['unexpected']} "
        f"unexpected; state `{rs['state']}`.",
    ]


def _latency_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "### Live jobs while a backfill keeps every worker busy",
        "",
        "Single-image live jobs on `qr`, one at a time, 0.1-0.3 s apart, while a backfill "
        f"(`--max-in-flight {LIVE_IN_FLIGHT}`) runs over the same kind of invoices. `backfill "
        "queued` = the fewest backfill jobs waiting on `qr-backfill` when a live job was "
        "enqueued (above 0: every worker was busy with a backfill job all along). Bound: a "
        "live job waits at most for the backfill job that finishes first, at most `--batch` x "
        "the scan time per image (the backfill's own lines: median and p95), then its own scan.",
        "",
        "| backfill | live jobs | backfill queued | round trip p50 / p95 / max ms "
        "| queue wait p50 / p95 ms | bound: batch x scan ms, median / p95 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["latency"]:
        label, bound = "none", "-"
        if r["batch"] is not None:
            label = f"`--batch {r['batch']}`"
            bound = f"{r['batch'] * r['scan_ms_median']:.0f} / {r['batch'] * r['scan_ms_p95']:.0f}"
        lines.append(
            f"| {label} | {r['jobs']} | {r['backfill_queued_min']} "
            f"| {r['round_trip_p50_ms']:.1f} / {r['round_trip_p95_ms']:.1f} / "
            f"{r['round_trip_max_ms']:.1f} "
            f"| {r['queue_wait_p50_ms']:.1f} / {r['queue_wait_p95_ms']:.1f} | {bound} |"
        )
    return lines


def _identity(n: int) -> str:
    return f"s3://{BUCKET}/2024/{n:09d}/invoice.png"


def _dedup_lines(results: dict[str, Any]) -> list[str]:
    dd = results["dedup"]
    lines = [
        "### Objects named twice: the set of enqueued objects",
        "",
        "A run over a manifest keeps the objects it has enqueued in Redis "
        f"(worker.backfill.seen: {2**dedup_set.BUCKET_BITS:,} hashes, a {dedup_set.FIELD_BYTES}-"
        "byte field per object), looked up and added as the runner does: one round trip of "
        f"lookups per transaction of {dd['chunk']:,} objects, the marks added in it. *As at "
        f"10^8 objects* = each hash holds what it holds in a run of {DEDUP_RUN:,} objects "
        f"({DEDUP_RUN / 2**dedup_set.BUCKET_BITS:.0f}), on fewer hashes, so the bytes per "
        "object are those of such a run; *small run* = the real number of hashes, mostly one "
        "object each. Redis = `used_memory` over the empty server's. The lookup of every "
        "object again (a manifest naming all of them twice) found each one. "
        f"`hash-max-listpack-entries` {dd['hash_max_listpack_entries']}.",
        "",
        "| fill | objects | hashes | objects per hash | encoding | Redis bytes per object "
        "| add: µs per object (driver CPU) | lookup again: µs per object | dropped in s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in dd["rows"]:
        lines.append(
            f"| {r['label']} | {r['objects']:,} | {r['hashes']:,} | {r['per_hash']:.0f} "
            f"| {r['encoding']} | {r['bytes_per_object']:.1f} "
            f"| {r['add_us_per_object']:.1f} ({r['cpu_us_per_object']:.1f}) "
            f"| {r['lookup_us_per_object']:.1f} | {r['clear_s']:.2f} |"
        )
    full = dd["rows"][0]
    lines += [
        "",
        f"At {DEDUP_RUN:,} objects the set takes about "
        f"**{full['bytes_per_object'] * DEDUP_RUN / 2**30:.1f} GiB** of Redis "
        f"({full['bytes_per_object']:.1f} bytes per object) and the driver "
        f"{full['add_us_per_object'] * DEDUP_RUN / 1e6 / 60:.0f} minutes over the whole run "
        f"({full['add_us_per_object']:.1f} µs per object); it is dropped when the listing "
        "ends.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller runs, a few minutes")
    size.add_argument("--smoke", action="store_true", help="tiny runs: checks the harness")
    parser.add_argument("--out", type=Path, default=None, help="docs/benchmarks.md")
    parser.add_argument("--batch", type=int, default=10, help="images per job (throughput)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="repeatable")
    parser.add_argument("--stand-in", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--stand-in-queue", default=BACKFILL_QUEUE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stand_in:
        return stand_in(args.stand_in, args.stand_in_queue)
    if shutil.which("redis-server") is None:
        print("redis-server is required", file=sys.stderr)
        return 2
    scale = SMOKE if args.smoke else QUICK if args.quick else FULL
    only = args.only or list(SECTIONS)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qrw-bench-backfill-") as tmp:
        base = Path(tmp)
        if "throughput" in only:
            results["throughput"] = throughput(base / "throughput", scale, args.batch)
            # One worker: the backfill process then has a core of its own, as it has when it
            # runs in its own pod, and its CPU no longer comes out of the workers' time.
            results["throughput_1"] = throughput(base / "throughput-1", scale, args.batch, 1)
        if "listing" in only:
            results["listing"] = listing(base / "listing", scale, 10, scale.listing_in_flight)
        if "resume" in only:
            results["resume"] = resume(base / "resume", scale, args.batch)
        if "latency" in only:
            results["latency"] = latency(base / "latency", scale, (1, 10))
        if "dedup" in only:
            results["dedup"] = dedup(base / "dedup", scale)
    command = " ".join(
        [COMMAND]
        + (["--quick"] if args.quick else ["--smoke"] if args.smoke else [])
        + ([] if args.batch == 10 else ["--batch", str(args.batch)])
        + [f"--only {section}" for section in args.only or ()]
    )
    run = {"command": command, "machine": machine_line()}
    results["measured"] = {key: run for key in list(results)}
    if args.out:
        # A section not measured this time keeps its stored numbers, and the command and
        # machine that measured them: `--only` replaces its own sections, not the others.
        path = args.out.with_name("benchmarks-backfill.json")
        results = merge(json.loads(path.read_text()) if path.exists() else {}, results)
    text = render(results)
    print(text)
    if args.out:
        write_section(args.out, "backfill", text)
        path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def merge(stored: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """`stored` with the sections of `fresh` replaced; a stored file from before sections
    recorded who measured them is credited to the plain command."""
    earlier = {"command": COMMAND, "machine": "an earlier run (not recorded)"}
    merged = {key: value for key, value in stored.items() if key != "measured"}
    measured = {key: stored.get("measured", {}).get(key, earlier) for key in merged}
    merged |= {key: value for key, value in fresh.items() if key != "measured"}
    measured |= fresh["measured"]
    return {**merged, "measured": measured}


if __name__ == "__main__":
    raise SystemExit(main())
