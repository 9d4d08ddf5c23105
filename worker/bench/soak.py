"""The soak: a pool under steady load through a fault every minute, then the accounting.

    python -m worker.bench.soak [--minutes 15] [--workers 2] [--fraction 0.8]
                                [--stops 20] [--out docs/reliability.md]

Starts its own redis-server (append-only file, fsync always) and `qrw worker --workers N`,
measures the pool's capacity with a burst of generated 2 MP digital invoices (`file://`),
then a producer enqueues at `--fraction` of that rate (the raw-Redis protocol of
docs/protocol.md) for `--minutes`, while a fault comes every `--fault-every` seconds, in
turn: a deploy (SIGTERM to the pool, a new pool once it has exited), a worker SIGKILLed
mid-job, Redis SIGKILLed and restarted, Redis full (`maxmemory` set to what it holds, under
`noeviction`) for `--full-seconds`. Then the producer stops, every fault is undone and the
run waits for the results of every job Redis acknowledged, and counts: acknowledged,
results, duplicates, lost, outcomes, queue wait percentiles per minute, pool PSS over time.

`--stops N` then stops N idle and N busy pools (a two-image job of pages with no code
running: the stop waits for it) and times each exit against the job's end (issue 18,
point 4). With `--out`, the report replaces the `soak` section of that file; it exits 1 when
a job was lost or duplicated, or a stop outlasted its bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from models.synth import digital_invoice, no_code_invoice
from worker.bench.report import machine_line, percentile, write_section
from worker.harness import NotStarted, Pool, RedisServer, free_port
from worker.procfs import total, tree
from worker.queue import names, producer

COMMAND = "python -m worker.bench.soak"
QUEUE = "qr-soak"
FAULTS = ("deploy", "worker_sigkill", "redis_sigkill", "redis_full")
# A stop may take the current job's time plus about a second (issue 18, point 4); this is
# the bound each stop is held to, with room for a loaded two-core machine.
STOP_BOUND_S = 2.0
# How long the run waits, after the producer stops, for the last acknowledged job's result:
# a job whose worker was killed runs again within about 30 s (README, *The queue*).
DRAIN_S = 120.0
PSS_EVERY_S = 5.0
# The busy stops' job: pages with no code run the whole cascade, about a second each here.
SLOW_SEEDS = (900, 901, 902)


@dataclass
class Ledger:
    """What the producer was told and what came back, shared by the run's threads."""

    started: float = field(default_factory=time.monotonic)
    acked: dict[str, float] = field(default_factory=dict)  # job id -> enqueued at
    refused: Counter[str] = field(default_factory=Counter)  # enqueue errors by kind
    results: defaultdict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    pss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    faults: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.started


class Soak:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.root = folder / "files"
        self.root.mkdir()
        self.refs = []
        for seed in range(20):
            path = self.root / f"invoice-{seed}.jpg"
            path.write_bytes(digital_invoice(6000 + seed, fmt="jpeg").data)
            self.refs.append(f"file://{path}")
        self.redis = RedisServer(folder / "redis")
        self.reply_to = names.reply_key(str(uuid.uuid4()))
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.pools = 0
        self.pool = self.start_pool()

    # -------------------------------------------------------------------- processes

    def env(self) -> dict[str, str]:
        # Every QRW_ setting at its default but the file root, the ports and the log level.
        return {
            "REDIS_URL": self.redis.url,
            "QRW_FILE_ROOTS": str(self.root),
            "QRW_METRICS_PORT": str(free_port()),
            "QRW_LOG_LEVEL": "warning",
        }

    def start_pool(self, queue: str = QUEUE) -> Pool:
        self.pools += 1
        log = self.folder / f"pool-{self.pools}.log"
        pool = Pool(self.env(), queue, self.args.workers, log, defaults_only=True)
        try:
            pool.wait_ready(self.client(), timeout=120)
        except NotStarted as exc:
            pool.stop()
            raise RuntimeError(f"the pool did not start (log: {log})") from exc
        return pool

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.redis.port, socket_timeout=5, socket_connect_timeout=2)

    # ------------------------------------------------------------------ the traffic

    def enqueue(self, client: redis.Redis, ref: str) -> None:
        payload = {"image": ref, "reply_to": self.reply_to}
        at = self.ledger.now()
        try:
            job_id = producer.enqueue(client, payload, queue=QUEUE)
        except redis.RedisError as exc:
            with self.ledger.lock:
                self.ledger.refused[type(exc).__name__] += 1
            return
        with self.ledger.lock:
            self.ledger.acked[job_id] = at

    def produce(self, rate: float, seconds: float) -> None:
        client = self.client()
        began = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                self.enqueue(client, self.refs[sent % len(self.refs)])
                sent += 1
            time.sleep(0.005)

    def collect(self) -> None:
        client = self.client()
        while not self.stopping.is_set():
            try:
                popped = client.blpop([self.reply_to], timeout=1)
            except redis.RedisError:
                time.sleep(0.2)  # Redis restarting or full: its list waits for us
                continue
            if popped:
                result = json.loads(popped[1])
                with self.ledger.lock:
                    self.ledger.results[str(result["job_id"])].append(result)

    def sample_pss(self) -> None:
        while not self.stopping.wait(PSS_EVERY_S):
            pss = total(tree(self.pool.process.pid)).pss
            with self.ledger.lock:
                self.ledger.pss.append((self.ledger.now(), pss))

    def capacity(self) -> float:
        """Jobs per second of the pool at full load: a burst, enqueued at once."""
        client = self.client()
        count = max(40, 30 * self.args.workers)
        reply_to = names.reply_key(str(uuid.uuid4()))
        for warm in (True, False):
            started = time.monotonic()
            for i in range(count):
                payload = {"image": self.refs[i % len(self.refs)], "reply_to": reply_to}
                producer.enqueue(client, payload, queue=QUEUE)
            for _ in range(count):
                if client.blpop([reply_to], timeout=60) is None:
                    raise RuntimeError("the capacity burst got no result within 60 s")
            if not warm:
                return count / (time.monotonic() - started)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------- the faults

    def fault(self, kind: str) -> dict[str, Any]:
        record: dict[str, Any] = {"kind": kind, "at_s": self.ledger.now()}
        began = time.monotonic()
        if kind == "deploy":
            old = self.pool
            old.signal(signal.SIGTERM)
            try:
                old.process.wait(120)
            except subprocess.TimeoutExpired:
                old.kill_all()
                record["killed"] = True
            record["stop_s"] = time.monotonic() - began
            self.pool = self.start_pool()
            record["outage_s"] = time.monotonic() - began
        elif kind == "worker_sigkill":
            workers = self.pool.worker_pids()
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                record["pid"] = workers[0]
        elif kind == "redis_sigkill":
            assert self.redis.process is not None
            self.redis.process.kill()
            self.redis.process.wait(10)
            self.redis.start()
            record["outage_s"] = time.monotonic() - began
        elif kind == "redis_full":
            client = self.client()
            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", str(used))
            self.stopping.wait(self.args.full_seconds)
            self.lift_memory_limit()
            record["maxmemory"] = used
            record["full_s"] = time.monotonic() - began
        return record

    def lift_memory_limit(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client().config_set("maxmemory", "0")
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def faults(self, seconds: float) -> None:
        began = time.monotonic()
        for turn in range(10**6):
            due = (turn + 1) * self.args.fault_every
            if due >= seconds:
                return
            time.sleep(max(0.0, due - (time.monotonic() - began)))
            record = self.fault(FAULTS[turn % len(FAULTS)])
            print(json.dumps(record), flush=True)
            self.ledger.faults.append(record)

    # --------------------------------------------------------------------- the run

    def run(self) -> dict[str, Any]:
        rate_max = self.capacity()
        rate = rate_max * self.args.fraction
        self.ledger = Ledger()
        seconds = self.args.minutes * 60
        threads = [
            threading.Thread(target=self.collect, daemon=True),
            threading.Thread(target=self.sample_pss, daemon=True),
        ]
        for thread in threads:
            thread.start()
        faulting = threading.Thread(target=self.faults, args=(seconds,), daemon=True)
        faulting.start()
        self.produce(rate, seconds)
        faulting.join()
        produced_s = self.ledger.now()
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and self.missing():
            time.sleep(0.5)
        drained_s = self.ledger.now() - produced_s
        self.stopping.set()
        for thread in threads:
            thread.join(10)
        self.settle_missing()
        return {"capacity": rate_max, "rate": rate, "drain_s": drained_s}

    def missing(self) -> list[str]:
        with self.ledger.lock:
            return [job for job in self.ledger.acked if job not in self.ledger.results]

    def settle_missing(self) -> None:
        """A result popped from the reply list as Redis was killed reached Redis, not us:
        its result key still holds it. Read it there before calling the job lost."""
        client = self.client()
        for job_id in self.missing():
            raw = client.get(names.result_key(job_id))
            if raw is not None:
                self.ledger.results[job_id].append({**json.loads(raw), "from_key": True})

    def close(self) -> None:
        self.pool.stop()
        self.redis.stop()


# ----------------------------------------------------------------------- stops


def timed_stops(soak: Soak, count: int) -> list[dict[str, Any]]:
    """Stop `count` idle and `count` busy pools; each row: seconds from the job's end (or
    SIGTERM, idle) to the pool's exit."""
    soak.pool.stop()
    slow = []
    for seed in SLOW_SEEDS:
        path = soak.root / f"slow-{seed}.jpg"
        path.write_bytes(no_code_invoice(seed, fmt="jpeg", megapixels=6.0, photo=True).data)
        slow.append(f"file://{path}")
    client = soak.client()
    rows = []
    for busy in (False, True):
        for attempt in range(count):
            queue = f"qr-stop-{'busy' if busy else 'idle'}-{attempt}"
            pool = soak.start_pool(queue)
            reply_to = names.reply_key(str(uuid.uuid4()))
            if busy:
                job = producer.enqueue(client, {"images": slow, "reply_to": reply_to}, queue=queue)
                while client.hget(names.rq_job_key(job), "status") != b"started":
                    time.sleep(0.01)
            else:
                time.sleep(0.5)
            signalled = time.monotonic()
            pool.signal(signal.SIGTERM)
            finished = None
            while pool.process.poll() is None and time.monotonic() - signalled < 120:
                if busy and finished is None and client.exists(reply_to):
                    finished = time.monotonic()
                time.sleep(0.01)
            exited = time.monotonic()
            pool.stop()
            if busy and finished is None and client.exists(reply_to):
                finished = exited
            rows.append(
                {
                    "busy": busy,
                    "job_s": (finished - signalled) if finished else None,
                    "stop_s": exited - (finished or signalled),
                    "result": bool(client.exists(reply_to)) if busy else None,
                    "code": pool.process.returncode,
                    # A stop is a few processes' teardown: on a shared machine, the CPU
                    # others took shows here, and the reader should see how much.
                    "load": os.getloadavg()[0],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------------- report


def accounting(soak: Soak) -> dict[str, Any]:
    ledger = soak.ledger
    acked = set(ledger.acked)
    counts = {job: len(ledger.results.get(job, [])) for job in acked}
    outcomes: Counter[str] = Counter()
    waits: defaultdict[int, list[float]] = defaultdict(list)
    for job, results in ledger.results.items():
        for result in results:
            error = result.get("error")
            outcomes["ok" if result.get("ok") else (error or {}).get("code", "unknown")] += 1
        if job in ledger.acked and results:
            wait = (results[0].get("timings_ms") or {}).get("queue_wait")
            if wait is not None:
                waits[int(ledger.acked[job] // 60)].append(float(wait))
    return {
        "acknowledged": len(acked),
        "results": sum(counts.values()),
        "jobs_with_a_result": sum(1 for n in counts.values() if n),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "lost": sorted(job for job, n in counts.items() if n == 0),
        "unexpected": sorted(set(ledger.results) - acked),
        "from_key": sum(1 for rs in ledger.results.values() for r in rs if r.get("from_key")),
        "refused": dict(ledger.refused),
        "outcomes": dict(outcomes),
        "waits": {minute: waits[minute] for minute in sorted(waits)},
    }


def render(
    args: argparse.Namespace,
    started: datetime,
    wall_s: float,
    run: dict[str, Any],
    books: dict[str, Any],
    ledger: Ledger,
    stops: list[dict[str, Any]],
) -> str:
    lines = [
        "## Soak: steady load through deploys, SIGKILLs and a full Redis, in turn",
        "",
        f"Produced by `{command(args)}`, {started:%Y-%m-%d %H:%M} UTC, in {wall_s / 60:.1f} min.  ",
        f"Machine: {machine_line()}",
        "",
        *wrap(
            "Its own redis-server (append-only file, fsync always), `qrw worker --workers "
            f"{args.workers}` (every QRW_ setting at its default but the file root and the "
            "ports), generated 2 MP digital JPEG invoices (`file://`), one per job, enqueued "
            "with raw Redis commands (docs/protocol.md). Capacity, from a burst enqueued at "
            f"once: {run['capacity']:.1f} jobs/s; the producer ran at {args.fraction:.0%} of "
            f"it ({run['rate']:.1f} jobs/s) for {args.minutes:g} min, with a fault every "
            f"{args.fault_every:g} s in turn: {', '.join(FAULTS)} (Redis full: `maxmemory` "
            f"set to what it held, `noeviction`, for {args.full_seconds:g} s). Then every job "
            f"Redis acknowledged was waited for ({run['drain_s']:.0f} s after the producer "
            "stopped). Refused at enqueue: the producer's error, the job never acknowledged."
        ),
        "",
        "| acknowledged | results | duplicates | lost | refused at enqueue | outcomes |",
        "|---|---|---|---|---|---|",
        f"| {books['acknowledged']} | {books['results']} | {books['duplicates']} "
        f"| {len(books['lost'])} | {_pairs(books['refused'])} | {_pairs(books['outcomes'])} |",
        "",
    ]
    if books["from_key"]:
        lines += [
            f"{books['from_key']} result(s) read from their result key: popped from the reply",
            "list as Redis was killed, delivered but never received by the producer.",
            "",
        ]
    if books["lost"]:
        lines += [f"Lost (first 10): {', '.join(books['lost'][:10])}", ""]
    if books["unexpected"]:
        lines += [
            f"{len(books['unexpected'])} result(s) of jobs the producer saw refused: Redis ran",
            "the enqueue, its reply was lost (Redis killed as it answered).",
            "",
        ]
    lines += [
        "Faults (seconds since the producer started):",
        "",
        "| at s | fault | detail |",
        "|---|---|---|",
    ]
    for fault in ledger.faults:
        detail = {k: v for k, v in fault.items() if k not in ("kind", "at_s")}
        shown = ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in detail.items()
        )
        lines.append(f"| {fault['at_s']:.0f} | {fault['kind']} | {shown} |")
    lines += [
        "",
        *wrap(
            "Queue wait (enqueue to job start, by the minute the job was enqueued), and pool "
            f"PSS (supervisor, workers and their children, sampled every {PSS_EVERY_S:g} s) in "
            "that minute:"
        ),
        "",
        "| minute | jobs | wait p50 ms | p95 ms | p99 ms | max ms | PSS MiB min / max |",
        "|---|---|---|---|---|---|---|",
    ]
    for minute, waits in books["waits"].items():
        pss = [mib for at, mib in ledger.pss if int(at // 60) == minute and mib > 0]
        shown = f"{min(pss):.0f} / {max(pss):.0f}" if pss else "-"
        lines.append(
            f"| {minute + 1} | {len(waits)} | {percentile(waits, 50):.0f} "
            f"| {percentile(waits, 95):.0f} | {percentile(waits, 99):.0f} | {max(waits):.0f} "
            f"| {shown} |"
        )
    if stops:
        lines += ["", *render_stops(stops)]
    return "\n".join(lines)


def render_stops(stops: list[dict[str, Any]]) -> list[str]:
    lines = [
        *wrap(
            f"Stops (issue 18, point 4): SIGTERM to a fresh `qrw worker` pool, {len(stops) // 2} "
            f"idle and as many busy (a job of {len(SLOW_SEEDS)} 6 MP pages with no code running; "
            "the stop waits for it). Seconds from SIGTERM (idle) or from the job's result "
            f"(busy) to the pool's exit, against a bound of {STOP_BOUND_S:g} s; `job s` is "
            "SIGTERM to the job's result:"
        ),
        "",
        "| pools | median s | max s | over the bound | job s, median | exit code 0 | result "
        "| 1-min load, max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for busy in (False, True):
        rows = [r for r in stops if r["busy"] is busy]
        took = [r["stop_s"] for r in rows]
        jobs = [r["job_s"] for r in rows if r["job_s"] is not None]
        job = f"{percentile(jobs, 50):.1f}" if jobs else "-"
        results = str(sum(bool(r["result"]) for r in rows)) if busy else "-"
        lines.append(
            f"| {len(rows)} {'busy' if busy else 'idle'} | {percentile(took, 50):.2f} "
            f"| {max(took):.2f} | {sum(t > STOP_BOUND_S for t in took)} | {job} "
            f"| {sum(r['code'] == 0 for r in rows)} | {results} "
            f"| {max(r.get('load', 0.0) for r in rows):.1f} |"
        )
    return lines


def wrap(text: str) -> list[str]:
    return textwrap.wrap(text, 92, break_on_hyphens=False)


def _pairs(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"


def command(args: argparse.Namespace) -> str:
    text = f"{COMMAND} --minutes {args.minutes:g}"
    if args.workers != 2:
        text += f" --workers {args.workers}"
    if args.fraction != 0.8:
        text += f" --fraction {args.fraction:g}"
    if args.fault_every != 60:
        text += f" --fault-every {args.fault_every:g}"
    if args.full_seconds != 30:
        text += f" --full-seconds {args.full_seconds:g}"
    if args.stops:
        text += f" --stops {args.stops}"
    if args.out:
        text += f" --out {args.out}"
    return text


def keep_evidence(soak: Soak, books: dict[str, Any], folder: Path) -> None:
    """A lost or doubled job, or a pool that would not stop: keep what explains it (the
    pools' logs, and what Redis holds of each such job) before the run's folder goes."""
    folder.mkdir(parents=True, exist_ok=True)
    for log in soak.folder.glob("pool-*.log"):
        (folder / log.name).write_bytes(log.read_bytes())
    client = soak.client()
    jobs = {}
    for job_id in [*books["lost"], *books["unexpected"]][:100]:
        with contextlib.suppress(redis.RedisError):
            fields = client.hgetall(names.rq_job_key(job_id))
            jobs[job_id] = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
    (folder / "jobs.json").write_text(json.dumps(jobs, indent=1))
    (folder / "faults.json").write_text(json.dumps(soak.ledger.faults, indent=1))
    print(f"soak: evidence kept in {folder}", file=sys.stderr)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=0.8, help="of measured capacity")
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--full-seconds", type=float, default=30.0, help="Redis full, seconds")
    parser.add_argument("--stops", type=int, default=0, help="idle and busy pools to stop")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--keep",
        type=Path,
        default=Path("build/soak-evidence"),
        help="where the pools' logs and the lost jobs' hashes go when a job is lost",
    )
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1 or args.minutes <= 0 or args.workers < 1:
        parser.error("--fraction in (0, 1], --minutes > 0, --workers >= 1")
    if args.full_seconds >= args.fault_every:
        parser.error("--full-seconds must be shorter than --fault-every")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = datetime.now(UTC)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qrw-soak-") as tmp:
        try:
            soak = Soak(args, Path(tmp))
        except RuntimeError as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return 2
        try:
            run = soak.run()
            books = accounting(soak)
            if (
                books["lost"]
                or books["duplicates"]
                or any(fault.get("killed") for fault in soak.ledger.faults)
            ):
                keep_evidence(soak, books, args.keep)
            stops = timed_stops(soak, args.stops) if args.stops else []
        finally:
            soak.close()
    text = render(args, started, time.monotonic() - began, run, books, soak.ledger, stops)
    print(text)
    if args.out:
        write_section(args.out, "soak", text)
    bad_stops = [s for s in stops if s["stop_s"] > STOP_BOUND_S or s["code"] != 0]
    return 1 if books["lost"] or books["duplicates"] or bad_stops else 0


if __name__ == "__main__":
    raise SystemExit(main())
