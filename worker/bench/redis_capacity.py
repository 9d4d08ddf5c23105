"""How far one Redis goes: what each job costs Redis, measured on the real worker loop.

    python -m worker.bench.redis_capacity [--workers 1,4,16,64,200] [--jobs 2000]
        [--batch 10] [--slow-scan-ms 500] [--duties 0,0.2,0.4,0.6,0.8] [--rounds 3]
        [--json FILE] [--out docs/benchmarks.md]

Starts its own redis-server on loopback (append-only, fsync every second, as `local_redis`)
and pools of stand-in workers: our RQ worker class (worker.queue.rq_worker) with its real
intake and admission, `jobs.scan`, the real fetch of a `file://` image and the real result
publishing, under the real pool (worker.queue.supervisor.OwningWorkerPool); only the engine
is a stand-in (`StandInEngine`) whose scan reads one code after a fixed wall time, asleep,
or none. The stand-in is installed by this module's own process entry point (`pool`, below),
so the runtime never imports it. For each pool it measures, from Redis's own counters
(INFO commandstats, INFO cpu used_cpu_sys + used_cpu_user, INFO memory):

- idle: Redis's commands and CPU per idle worker and second over a maintenance interval
  (the pop slices, heartbeats and maintenance passes of workers waiting for work), less
  what Redis does alone, and the keys Redis holds meanwhile (each pass SCANs job hashes);
- a burst of jobs enqueued at once (single-image, and batches of --batch images): commands
  and Redis CPU per job (the producer's enqueue and result read included), jobs/s, and
  Redis's utilisation meanwhile; every job must get exactly one result (`collect`); and
  what a finished job leaves, key by key.
Before the pools: memory per queued job (single and batched) in a queue no worker reads;
and the latency a job gains as Redis's event loop fills: jobs at a steady rate through
stand-in workers while a Lua script spinning inside Redis (`BURN`, from a process of its
own: the `burn` entry point) holds the loop a growing share of the time, each share in
turn, several rounds: the job's round trip minus its own time, and a PING's.

The job rate at which one core saturates is 1 / (Redis CPU per job), less what idle
workers take. The host's load average is recorded beside each number: on a shared machine
the ratios (per job, per worker) are what carries over, not the absolute rates.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis
from rq.results import Result
from rq.serializers import JSONSerializer

from worker import procfs
from worker.bench.report import machine_line, percentile, write_section
from worker.engine.results import Code, ScanResult
from worker.harness import Output, Pool, RedisServer, child_env, spawn, stop, wait_until
from worker.queue import context, names, producer, runtime, supervisor
from worker.queue.context import JobContext
from worker.queue.replies import Publisher
from worker.queue.rq_worker import QrJob, QrQueue, QrSimpleWorker
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.engine import Engine

COMMAND = "python -m worker.bench.redis_capacity"
ENTRY = (sys.executable, "-m", "worker.bench.redis_capacity")
# What the stand-in reads: a CFDI verification URL of the usual length, so that results
# weigh in Redis what a digital invoice's do (README, *The result*).
STAND_IN_TEXT = (
    "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx?"
    "id=5FB2822E-396D-4725-8521-CDC4BDD20CCF&re=XAXX010101000&rr=XEXX010101000"
    "&tt=0000001234.560000&fe=bWFuem9uYQ=="
)
# Seconds of idle pool over which the idle cost is read: longer than the maintenance
# interval (QRW_RECOVERY_INTERVAL, 10 s), so that every worker's pass is in it.
IDLE_WINDOW_S = 12.0
# The steady rate and pool of the latency-near-saturation run: far below what the pool
# can do (16 x 1 / 20 ms), so that any wait it shows is Redis's, not the workers'.
LATENCY_WORKERS = 16
LATENCY_SCAN_MS = 20
LATENCY_RATE = 40.0
# Jobs queued before memory per queued job is read.
QUEUED_WARM = 20
# How often the probe PINGs Redis while the jobs run.
PING_EVERY_S = 0.01
# The share of Redis's core the spinning script is asked to take, per step.
BURN_DUTIES = (0.0, 0.2, 0.4, 0.6, 0.8)
# The longest one spin holds Redis: a job's command waits at most this behind it, as
# behind a long command of another client.
BURN_CHUNK_US = 500
# Connections spinning at once: while one is between two calls, another's spin runs.
BURNERS = 2
# Spins until Redis has spent `duty` of the wall time since the schedule began (KEYS[1])
# spinning, at most ARGV[2] us per call: a caller that was late (a busy host) makes up
# for it on its next calls, so the share holds whatever the callers' timing.
BURN = """
local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local start = now()
local began = tonumber(redis.call('HGET', KEYS[1], 'began'))
if not began then
  redis.call('HSET', KEYS[1], 'began', start)
  began = start
end
local burned = tonumber(redis.call('HGET', KEYS[1], 'burned') or '0')
local duty = tonumber(ARGV[1])
local owed = (duty * (start - began) - burned) / (1 - duty)
if owed <= 0 then return 0 end
local stop = start + math.min(owed, tonumber(ARGV[2]))
local t = start
while t < stop do t = now() end
redis.call('HINCRBY', KEYS[1], 'burned', t - start)
return 1
"""


# --------------------------------------------------------------------------- stand-ins


class StandInEngine:
    """What `jobs.scan` calls instead of the engine: one code read after `scan_s` of wall
    time spent asleep, so that the host's cores stay with Redis and the worker loop."""

    stages: tuple[()] = ()

    def __init__(self, scan_s: float) -> None:
        self.scan_s = scan_s

    def scan(self, data: object, deadline_ms: int | None = None, want: str = "all") -> ScanResult:
        if self.scan_s > 0:
            time.sleep(self.scan_s)
        code = Code(
            text=STAND_IN_TEXT,
            data=STAND_IN_TEXT.encode(),
            format="QRCode",
            quad=((916.0, 1416.0), (1064.0, 1416.0), (1064.0, 1564.0), (916.0, 1564.0)),
            page=0,
            stage="fast",
            decoder="stand-in",
            variant="reduced",
            content_type="Text",
            symbology_identifier="]Q1",
            ec_level="M",
            version="7",
        )
        return ScanResult(
            codes=[code],
            format="jpeg",
            width=1240,
            height=1754,
            pages=1,
            stages_run=["fast"],
            timings_ms={"fast": self.scan_s * 1000.0, "total": self.scan_s * 1000.0},
        )


# Set by `serve` before the pool forks its workers, which inherit it.
_scan_s = 0.0


class StandInWorker(QrSimpleWorker):
    """Our worker, every policy and hook as `qrw worker` runs it, over a stand-in engine."""

    def load_engine(self) -> None:
        if context.get() is not None:
            return
        from worker import metrics  # in the worker process, as the real worker does

        settings = self._settings
        connection = runtime.connect(settings)
        # The context as worker.queue.context.build makes it, the engine aside.
        engine = cast("Engine", StandInEngine(_scan_s))
        context.install(
            JobContext(
                settings=settings,
                engine=engine,
                connection=connection,
                publisher=Publisher(connection, settings),
                worker=f"{socket.gethostname()}/{self.name}",
                backend="stand-in",
                model=None,
            )
        )
        metrics.start("queue", "stand-in", None)


def serve(queue: str, workers: int, scan_ms: float) -> int:
    """The `pool` entry point: `qrw worker`'s supervisor (worker.queue.supervisor.run) with
    stand-in workers, and without the metrics port and the engine libraries' preload."""
    global _scan_s
    from worker import logs

    settings = Settings.from_env()
    logs.configure(settings)
    _scan_s = scan_ms / 1000.0
    connection = runtime.connect(settings)
    supervisor.register_queues(connection, (queue,))
    supervisor.become_subreaper()
    # What this process imported, shared by its forks instead of copied into each by the
    # collector's writes: 200 workers are 200 forks of it.
    gc.collect()
    gc.freeze()
    pool = supervisor.OwningWorkerPool(
        (queue,),
        connection=connection,
        num_workers=workers,
        worker_class=StandInWorker,
        serializer=JSONSerializer,
        job_class=QrJob,
        queue_class=QrQueue,
    )
    pool.start(burst=False, logging_level=settings.log_level.upper())
    return 0


class StandInPool(Pool):
    """`serve` in a process of its own, started and stopped as the harness's Pool."""

    def __init__(
        self,
        env: Mapping[str, str],
        queue: str,
        workers: int,
        scan_ms: float,
        log: Output = None,
    ) -> None:
        self.log = log if isinstance(log, Path) else None
        self.queue = queue
        self.workers = workers
        argv = [*ENTRY, "pool", queue, "--workers", str(workers), "--scan-ms", f"{scan_ms:g}"]
        self.process = spawn(argv, child_env(env, defaults_only=True), log)

    def worker_pids(self) -> list[int]:
        marker = b"worker.bench.redis_capacity"
        return [pid for pid in procfs.children(self.process.pid) if marker in procfs.cmdline(pid)]


# --------------------------------------------------------------------------- readings


@dataclass(frozen=True)
class Reading:
    """One look at Redis's counters. The looks' own INFO calls are left out."""

    at: float
    cpu_s: float
    calls: dict[str, int]
    used_memory: int
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    def commands(self) -> int:
        return sum(self.calls.values())


def read(client: redis.Redis) -> Reading:
    cpu = client.info("cpu")
    stats = client.info("commandstats")
    memory = client.info("memory")
    calls = {
        key.removeprefix("cmdstat_"): int(value["calls"])
        for key, value in stats.items()
        if key != "cmdstat_info"
    }
    return Reading(
        at=time.perf_counter(),
        cpu_s=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        calls=calls,
        used_memory=int(memory["used_memory"]),
    )


@dataclass(frozen=True)
class Delta:
    seconds: float
    cpu_s: float
    calls: dict[str, int]
    memory: int
    load: float

    @classmethod
    def between(cls, before: Reading, after: Reading) -> Delta:
        calls = {
            name: count - before.calls.get(name, 0)
            for name, count in after.calls.items()
            if count > before.calls.get(name, 0)
        }
        return cls(
            seconds=after.at - before.at,
            cpu_s=after.cpu_s - before.cpu_s,
            calls=calls,
            memory=after.used_memory - before.used_memory,
            load=max(before.load, after.load),
        )

    def commands(self) -> int:
        return sum(self.calls.values())

    def utilisation(self) -> float:
        return self.cpu_s / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- the runs


class CountMismatch(AssertionError):
    """A job got no result, or more than one: the benchmark's accounting failed."""


def payload(ref: str, batch: int, reply_to: str) -> dict[str, Any]:
    images = {"images": [ref] * batch} if batch > 1 else {"image": ref}
    return {**images, "reply_to": reply_to}


def collect(client: redis.Redis, reply_to: str, ids: list[str], timeout_s: float) -> list[dict]:
    """Every result the jobs `ids` send to `reply_to`; exactly one each, or CountMismatch."""
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(results) < len(ids):
        left = deadline - time.monotonic()
        popped = client.blpop([reply_to], timeout=max(1, int(left))) if left > 0 else None
        if popped is None:
            raise CountMismatch(f"{len(ids) - len(results)} of {len(ids)} results missing")
        results.append(json.loads(popped[1]))
    got = [r["job_id"] for r in results]
    extra = client.llen(reply_to)
    if sorted(got) != sorted(ids) or extra:
        raise CountMismatch(
            f"{len(ids)} jobs: {len(results) + extra} results, for {len(set(got) & set(ids))} "
            "of them"
        )
    failed = [r for r in results if not r["ok"]]
    if failed:
        raise CountMismatch(f"{len(failed)} results not ok, first: {failed[0]['error']}")
    return results


def burst(
    client: redis.Redis, queue: str, ref: str, jobs: int, batch: int, timeout_s: float
) -> dict[str, Any]:
    """`jobs` jobs enqueued back to back and their results read: Redis's cost per job."""
    reply_to = names.reply_key(str(uuid.uuid4()))
    before = read(client)
    ids = [
        producer.enqueue(client, payload(ref, batch, reply_to), queue=queue) for _ in range(jobs)
    ]
    collect(client, reply_to, ids, timeout_s)
    delta = Delta.between(before, read(client))
    top = sorted(delta.calls.items(), key=lambda item: -item[1])
    kept = kept_keys(client, ids[0])
    return {
        "kept": kept,
        "jobs": jobs,
        "images_per_job": batch,
        "results": jobs,  # collect() checked: one per job, each ok
        "seconds": delta.seconds,
        "jobs_per_s": jobs / delta.seconds,
        "redis_cpu_us_per_job": delta.cpu_s / jobs * 1e6,
        "commands_per_job": delta.commands() / jobs,
        "commands": {name: count / jobs for name, count in top},
        "redis_utilisation": delta.utilisation(),
        "kept_bytes_per_job": delta.memory / jobs,
        "load": delta.load,
    }


@dataclass(frozen=True)
class Baseline:
    """What Redis does a second with no worker connected: its own timers, the AOF's
    fsync. Taken off the idle pools' counts, which are then the workers' alone."""

    commands_per_s: float = 0.0
    cpu_us_per_s: float = 0.0


def baseline(client: redis.Redis, seconds: float) -> Baseline:
    before = read(client)
    time.sleep(seconds)
    delta = Delta.between(before, read(client))
    return Baseline(delta.commands() / delta.seconds, delta.cpu_s / delta.seconds * 1e6)


def kept_keys(client: redis.Redis, job_id: str) -> dict[str, dict[str, int]]:
    """What a finished job leaves in Redis, key by key: bytes (MEMORY USAGE) and seconds
    to live (-1: none); the results stream's bytes per entry, which its MAXLEN bounds."""
    # RQ's bookkeeping (the job hash's time to live, its own result) follows the
    # published result: a job only just answered has not had it yet.
    wait_until(lambda: client.exists(Result.get_key(job_id)), 10, "RQ's result of a job")
    keys = {
        "result": names.result_key(job_id),
        "delivery": names.delivery_key(job_id),
        "rq_job": names.rq_job_key(job_id),
        "rq_result": Result.get_key(job_id),
    }
    kept = {
        name: {"bytes": int(client.memory_usage(key, samples=0) or 0), "ttl": int(client.ttl(key))}
        for name, key in keys.items()
    }
    entries = int(client.xlen(names.RESULTS_STREAM)) or 1
    stream = int(client.memory_usage(names.RESULTS_STREAM, samples=0) or 0)
    kept["stream_entry"] = {"bytes": stream // entries, "ttl": -1}
    return kept


def idle(client: redis.Redis, workers: int, seconds: float, base: Baseline) -> dict[str, Any]:
    before = read(client)
    time.sleep(seconds)
    delta = Delta.between(before, read(client))
    commands_per_s = delta.commands() / delta.seconds - base.commands_per_s
    cpu_us_per_s = delta.cpu_s / delta.seconds * 1e6 - base.cpu_us_per_s
    per = workers * delta.seconds
    top = sorted(delta.calls.items(), key=lambda item: -item[1])
    return {
        "idle_commands_per_worker_s": commands_per_s / workers,
        "idle_cpu_us_per_worker_s": cpu_us_per_s / workers,
        "idle_commands": {name: count / per for name, count in top},
        # Each worker's maintenance pass SCANs job hashes: its cost grows with the keyspace.
        "idle_keys": int(client.dbsize()),
        "idle_load": delta.load,
    }


def measure_pool(
    server: RedisServer,
    env: dict[str, str],
    ref: str,
    workers: int,
    scan_ms: float,
    args: argparse.Namespace,
    logs: Path,
    base: Baseline,
) -> dict[str, Any]:
    client = server.client()
    queue = f"capacity-{workers}-{scan_ms:g}"
    pool = StandInPool(env, queue, workers, scan_ms, logs / f"{queue}.log")
    try:
        ready_s = pool.wait_ready(client, timeout=max(120.0, workers * 2.0))
        # Every worker through its start-up writes (birth, scheduler lock, first pass).
        time.sleep(min(2.0, args.idle_s))
        row: dict[str, Any] = {"workers": workers, "scan_ms": scan_ms, "ready_s": ready_s}
        row |= idle(client, workers, args.idle_s, base)
        usage = procfs.total(procfs.tree(pool.process.pid))
        row["pool_pss_mib"] = usage.pss
        # Enough time for the slowest pool; a result missing past it is a failure.
        timeout_s = 60.0 + args.jobs * max(scan_ms, 1.0) / 1000.0 / workers * 4
        row["single"] = burst(client, queue, ref, args.jobs, 1, timeout_s)
        if args.batch > 1:
            jobs = max(1, args.jobs // args.batch)
            row["batched"] = burst(client, queue, ref, jobs, args.batch, timeout_s * 2)
        return row
    finally:
        pool.stop()


def queued_memory(client: redis.Redis, ref: str, jobs: int, batch: int) -> float:
    """Bytes of Redis memory per job waiting in a queue no worker reads."""
    queue = f"capacity-queued-{batch}"
    reply_to = names.reply_key(str(uuid.uuid4()))

    def enqueue(count: int) -> list[str]:
        return [
            producer.enqueue(client, payload(ref, batch, reply_to), queue=queue)
            for _ in range(count)
        ]

    # The queue's list and its entry in rq:queues made first: they are no job's cost.
    ids = enqueue(QUEUED_WARM)
    before = read(client)
    ids += enqueue(jobs)
    grown = Delta.between(before, read(client)).memory / jobs
    client.delete(names.rq_queue_key(queue), *(names.rq_job_key(i) for i in ids))
    return grown


def burn(url: str, duty: float, schedule: str) -> int:
    """The `burn` entry point: BURNERS connections calling BURN back to back (a short
    sleep when nothing is owed) until SIGTERM; `schedule` is the key of its accounts."""

    def spin() -> None:
        client = redis.Redis.from_url(url)
        script = client.register_script(BURN)
        while True:
            if not script(keys=[schedule], args=[duty, BURN_CHUNK_US]):
                time.sleep(BURN_CHUNK_US / 1e6 / 4)

    threads = [threading.Thread(target=spin, daemon=True) for _ in range(BURNERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


def spin_share(client: redis.Redis, schedule: str) -> float:
    """The share of wall time Redis's event loop spent in BURN since the schedule began:
    the time no other client was served, whether Redis had the CPU or the host gave it
    to another process meanwhile."""
    began, burned = client.hmget(schedule, ["began", "burned"])
    seconds, micros = client.time()
    elapsed = seconds * 1_000_000 + micros - int(began or 0)
    return int(burned or 0) / elapsed if began and elapsed > 0 else 0.0


@dataclass
class Steady:
    """What the jobs at a steady rate saw, over every round at one spin share."""

    overheads: list[float] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)
    jobs: int = 0
    cpu_s: float = 0.0
    seconds: float = 0.0
    spun: list[float] = field(default_factory=list)
    load: float = 0.0

    def row(self, duty: float) -> dict[str, Any]:
        return {
            "duty": duty,
            "jobs": self.jobs,
            "spin_share": sum(self.spun) / len(self.spun) if self.spun else 0.0,
            "redis_utilisation": self.cpu_s / self.seconds if self.seconds else 0.0,
            "overhead_median_ms": percentile(self.overheads, 50),
            "overhead_p95_ms": percentile(self.overheads, 95),
            "overhead_p99_ms": percentile(self.overheads, 99),
            "ping_median_ms": percentile(self.pings, 50),
            "ping_p95_ms": percentile(self.pings, 95),
            "load": self.load,
        }


def steady(
    client: redis.Redis, server: RedisServer, queue: str, ref: str, seconds: float, into: Steady
) -> None:
    """Jobs at LATENCY_RATE for `seconds`: each one's round trip (enqueue to its result
    read) minus its own time in the job (`timings_ms.total`), the queue's share of it; and
    a PING every PING_EVERY_S meanwhile, the wait of one Redis round trip."""
    reply_to = names.reply_key(str(uuid.uuid4()))
    count = int(seconds * LATENCY_RATE)
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    errors: list[BaseException] = []
    done = threading.Event()

    def read_results() -> None:
        reader = server.client()
        try:
            while len(received) < count:
                popped = reader.blpop([reply_to], timeout=30)
                if popped is None:
                    return
                at = time.perf_counter()
                result = json.loads(popped[1])
                received[result["job_id"]] = at
                into.overheads.append(
                    (at - sent[result["job_id"]]) * 1000.0 - result["timings_ms"]["total"]
                )
        except BaseException as exc:  # reported by the caller, with the counts
            errors.append(exc)

    def ping() -> None:
        prober = server.client()
        while not done.wait(PING_EVERY_S):
            started = time.perf_counter()
            prober.ping()
            into.pings.append((time.perf_counter() - started) * 1000.0)

    threads = [
        threading.Thread(target=read_results, name="results", daemon=True),
        threading.Thread(target=ping, name="ping", daemon=True),
    ]
    started = time.perf_counter()
    before = read(client)
    for thread in threads:
        thread.start()
    for i in range(count):
        time.sleep(max(0.0, started + i / LATENCY_RATE - time.perf_counter()))
        job_id = str(uuid.uuid4())
        sent[job_id] = time.perf_counter()
        producer.enqueue(client, payload(ref, 1, reply_to), queue=queue, job_id=job_id)
    threads[0].join(60)
    done.set()
    threads[1].join(10)
    delta = Delta.between(before, read(client))
    if errors or len(received) != count or set(received) != set(sent):
        raise CountMismatch(f"{count} jobs, {len(received)} results ({errors})")
    into.jobs += count
    into.cpu_s += delta.cpu_s
    into.seconds += delta.seconds
    into.load = max(into.load, delta.load)


def near_saturation(
    server: RedisServer, env: dict[str, str], ref: str, args: argparse.Namespace, logs: Path
) -> list[dict[str, Any]]:
    """Each spin share in turn, `args.rounds` times over: the host's load drifts, and
    every share gets its part of each drift."""
    client = server.client()
    queue = "capacity-latency"
    workers = args.latency_workers
    pool = StandInPool(env, queue, workers, LATENCY_SCAN_MS, logs / f"{queue}.log")
    seen = {duty: Steady() for duty in args.duties}
    try:
        pool.wait_ready(client, timeout=120)
        steady(client, server, queue, ref, min(2.0, args.steady_s), Steady())  # the path warm
        for round_ in range(args.rounds):
            for duty in args.duties:
                schedule = f"{names.PREFIX}capacity-burn:{round_}:{duty:g}"
                argv = [*ENTRY, "burn", server.url, "--duty", str(duty), "--key", schedule]
                burner = spawn(argv, child_env({}), logs / "burn.log") if duty > 0 else None
                try:
                    steady(client, server, queue, ref, args.steady_s / args.rounds, seen[duty])
                finally:
                    if burner is not None:
                        stop(burner)
                if burner is not None:
                    seen[duty].spun.append(spin_share(client, schedule))
    finally:
        pool.stop()
    rows = [seen[duty].row(duty) for duty in args.duties]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="qrw-capacity-") as folder:
        server = RedisServer(Path(folder), fsync="everysec")
        try:
            yield server
        finally:
            server.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="qrw-capacity-files-") as tmp, redis_server() as server:
        root = Path(tmp)
        image = root / "invoice.jpg"
        # The stand-in never looks at the bytes; the worker still fetches them.
        image.write_bytes(b"\xff\xd8\xff" + bytes(20_000))
        ref = f"file://{image}"
        logs = Path(args.logs) if args.logs else root
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            "REDIS_URL": server.url,
            "QRW_FILE_ROOTS": str(root),
            "QRW_LOG_LEVEL": "warning",
            "QRW_METRICS_PORT": "0",
        }
        client = server.client()
        report: dict[str, Any] = {"pools": [], "started": datetime.now(UTC).isoformat()}
        base = baseline(client, args.idle_s)
        report["baseline"] = {
            "commands_per_s": base.commands_per_s,
            "cpu_us_per_s": base.cpu_us_per_s,
        }
        report["queued_bytes_single"] = queued_memory(client, ref, args.queued, 1)
        report["queued_bytes_batched"] = queued_memory(client, ref, args.queued, args.batch)
        # Before the large pools, whose hundreds of processes leave the host loaded a
        # while after they stop.
        report["near_saturation"] = (
            near_saturation(server, env, ref, args, logs) if args.duties else []
        )
        plan = [(n, 0.0) for n in args.workers]
        if args.slow_scan_ms:
            plan.append((max(args.workers), args.slow_scan_ms))
        for workers, scan_ms in plan:
            row = measure_pool(server, env, ref, workers, scan_ms, args, logs, base)
            report["pools"].append(row)
            print(json.dumps(row), flush=True)
        return report


# --------------------------------------------------------------------------- the report


def saturation(pools: list[dict[str, Any]]) -> dict[str, float]:
    """The headline ratios: the median over pools of Redis CPU per job, and what it gives."""
    single = sorted(p["single"]["redis_cpu_us_per_job"] for p in pools)
    batched = sorted(p["batched"]["redis_cpu_us_per_job"] for p in pools if "batched" in p)
    # Per idle worker from the largest pool: Redis's own timers, taken off as the baseline,
    # are noise against one worker's few commands a second, and small against 200 workers'.
    largest = max(pools, key=lambda p: (p["workers"], -p["scan_ms"]))
    median = single[len(single) // 2]
    out = {
        "cpu_us_per_job": median,
        "jobs_per_s_at_saturation": 1e6 / median,
        "idle_cpu_us_per_worker_s": largest["idle_cpu_us_per_worker_s"],
        "idle_commands_per_worker_s": largest["idle_commands_per_worker_s"],
        "idle_workers": largest["workers"],
    }
    if batched:
        out["cpu_us_per_batched_job"] = batched[len(batched) // 2]
    return out


def render(report: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    pools = report["pools"]
    head = saturation(pools)
    batch = args.batch
    lines = [
        "## How far one Redis goes: Redis's cost per job, on the real worker loop",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}; load average (1 min) beside each number: the machine's",
        "2 cores are shared with other work, so the ratios (per job, per worker) are the",
        "result, not the absolute rates.",
        "",
        "Stand-in workers: our RQ worker class with its intake, admission, `jobs.scan`, the",
        "`file://` fetch and the result publishing (result key, reply list, `qrw:results`",
        "stream), under `qrw worker`'s pool; only the engine is a stand-in that reads one code",
        "(a CFDI URL) after a fixed sleep, 0 ms unless the row says otherwise. Redis is",
        "loopback redis-server with AOF (fsync every second). Counts and CPU come from Redis's",
        "INFO (commandstats; used_cpu_sys + used_cpu_user), over the whole burst, the",
        "producer's enqueue and result read included. Every job got exactly one result.",
        "",
        f"**Headline: {head['cpu_us_per_job']:.0f} us of Redis CPU per single-image job**"
        f" (median over the pools), so one Redis core saturates at about"
        f" **{head['jobs_per_s_at_saturation']:,.0f} jobs/s**",
    ]
    if "cpu_us_per_batched_job" in head:
        per_image = head["cpu_us_per_batched_job"] / batch
        lines[-1] += (
            f"; a job of {batch} images costs {head['cpu_us_per_batched_job']:.0f} us"
            f" ({per_image:.0f} us per image: about {1e6 / per_image:,.0f} images/s)"
        )
    lines[-1] += (
        f". Each idle worker costs {head['idle_cpu_us_per_worker_s']:.0f} us of Redis CPU and"
        f" {head['idle_commands_per_worker_s']:.1f} commands a second (its 0.5 s pop slices,"
        f" heartbeats and maintenance passes; measured over {head['idle_workers']} idle"
        " workers, less what Redis does alone)."
    )
    lines += [
        "",
        "| workers | scan ms | ready s | pool PSS MiB | keys "
        "| idle: commands / CPU us per worker-s | jobs | jobs/s | Redis CPU us per job "
        "| commands per job | Redis busy | "
        f"{batch}-image jobs/s | Redis CPU us per {batch}-image job | commands per job | "
        "load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pools:
        s, b = p["single"], p.get("batched")
        batched = (
            f"{b['jobs_per_s']:.0f} | {b['redis_cpu_us_per_job']:.0f} | {b['commands_per_job']:.1f}"
            if b
            else "- | - | -"
        )
        lines.append(
            f"| {p['workers']} | {p['scan_ms']:g} | {p['ready_s']:.1f} | {p['pool_pss_mib']:.0f} "
            f"| {p['idle_keys']:,} "
            f"| {p['idle_commands_per_worker_s']:.2f} / {p['idle_cpu_us_per_worker_s']:.0f} "
            f"| {s['jobs']} | {s['jobs_per_s']:.0f} | {s['redis_cpu_us_per_job']:.0f} "
            f"| {s['commands_per_job']:.1f} | {s['redis_utilisation']:.0%} | {batched} "
            f"| {max(s['load'], p['idle_load']):.1f} |"
        )
    largest = max(pools, key=lambda p: (p["workers"], -p["scan_ms"]))
    idle_mix = ", ".join(
        f"{name} {count:.2f}" for name, count in list(largest["idle_commands"].items())[:8]
    )
    kept_text = ", ".join(
        f"{name} {value['bytes']:,} bytes "
        + (
            f"for {value['ttl']:,} s"
            if value["ttl"] >= 0
            else "until QRW_RESULTS_STREAM_MAXLEN trims it"
            if name == "stream_entry"
            else "with no expiry"
        )
        for name, value in pools[0]["single"]["kept"].items()
    )
    first = pools[0]["single"]["commands"]
    mix = ", ".join(f"{name} {count:.2f}" for name, count in list(first.items())[:14])
    lines += [
        "",
        f"Commands per single-image job ({pools[0]['workers']} worker): {mix}.",
        "",
        f"Commands per idle worker and second ({largest['workers']} workers, "
        f"{largest['scan_ms']:g} ms scan, {largest['idle_keys']:,} keys in Redis): {idle_mix}.",
        "",
        "Memory: a queued single-image job holds "
        f"{report['queued_bytes_single']:,.0f} bytes of Redis (its hash and queue entry), a "
        f"queued {batch}-image job {report['queued_bytes_batched']:,.0f}. A finished job left "
        f"{pools[0]['single']['kept_bytes_per_job']:,.0f} bytes per job over the 1-worker "
        f"burst; key by key (MEMORY USAGE, time to live): {kept_text}.",
    ]
    if report["near_saturation"]:
        base = report["near_saturation"][0]
        lines += [
            "",
            f"### Latency added as Redis's event loop fills ({args.latency_workers} stand-in "
            f"workers, {LATENCY_SCAN_MS} ms scan, {LATENCY_RATE:g} jobs/s)",
            "",
            "Overhead = enqueue to result read, minus the job's own time: what the queue adds. "
            f"A Lua script spinning up to {BURN_CHUNK_US} us at a time inside Redis (from "
            f"{BURNERS} connections) holds its event loop for a share of the wall time, asked, "
            "then as measured by the script: no other client is served meanwhile, as when the "
            "core is taken by other clients' commands. *Redis CPU* is what INFO cpu counted, "
            "below the spin share when the host's other processes kept Redis off a core. "
            f"*PING* is one round trip to Redis, probed every {PING_EVERY_S * 1000:g} ms "
            "meanwhile. Each share was run "
            f"{args.rounds} times, in turn with the others, {args.steady_s / args.rounds:g} s "
            "each; the figures are over all its jobs.",
            "",
            "| spin share asked | measured | Redis CPU | jobs "
            "| overhead median / p95 / p99 ms | added median / p95 ms "
            "| PING median / p95 ms | load |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in report["near_saturation"]:
            lines.append(
                f"| {r['duty']:.0%} | {r['spin_share']:.0%} | {r['redis_utilisation']:.0%} "
                f"| {r['jobs']} "
                f"| {r['overhead_median_ms']:.1f} / {r['overhead_p95_ms']:.1f} / "
                f"{r['overhead_p99_ms']:.1f} "
                f"| {r['overhead_median_ms'] - base['overhead_median_ms']:+.1f} / "
                f"{r['overhead_p95_ms'] - base['overhead_p95_ms']:+.1f} "
                f"| {r['ping_median_ms']:.2f} / {r['ping_p95_ms']:.2f} | {r['load']:.1f} |"
            )
    return "\n".join(lines)


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def fractions(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pool"]:
        pool = argparse.ArgumentParser(prog=f"{COMMAND} pool")
        pool.add_argument("queue")
        pool.add_argument("--workers", type=int, required=True)
        pool.add_argument("--scan-ms", type=float, default=0.0)
        options = pool.parse_args(argv[1:])
        return serve(options.queue, options.workers, options.scan_ms)
    if argv[:1] == ["burn"]:
        spinner = argparse.ArgumentParser(prog=f"{COMMAND} burn")
        spinner.add_argument("url")
        spinner.add_argument("--duty", type=float, required=True)
        spinner.add_argument("--key", required=True)
        options = spinner.parse_args(argv[1:])
        return burn(options.url, options.duty, options.key)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=numbers, default=[1, 4, 16, 64, 200])
    parser.add_argument("--jobs", type=int, default=2000, help="single-image jobs per burst")
    parser.add_argument("--batch", type=int, default=10, help="images per batched job")
    parser.add_argument(
        "--slow-scan-ms", type=float, default=500.0, help="one more pool of the most workers"
    )
    parser.add_argument("--queued", type=int, default=5000, help="jobs for memory per job")
    parser.add_argument("--idle-s", type=float, default=IDLE_WINDOW_S)
    parser.add_argument("--duties", type=fractions, default=list(BURN_DUTIES))
    parser.add_argument("--steady-s", type=float, default=15.0, help="per spin share")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-workers", type=int, default=LATENCY_WORKERS)
    parser.add_argument("--logs", default=None, help="keep the pools' logs in this folder")
    parser.add_argument("--json", type=Path, default=None, help="the numbers, as JSON")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is required", file=sys.stderr)
        return 2
    # Stopped with SIGTERM, the run still stops its pools and its redis-server (the
    # `finally` blocks run on SystemExit; Python's default would leave them running).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    command = " ".join([COMMAND, *(a for a in argv)])
    text = render(report, args, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.out:
        write_section(args.out, "redis-capacity", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
