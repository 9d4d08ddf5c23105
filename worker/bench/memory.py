"""What a `qrw worker` pool holds in memory, and how long it takes to be ready.

    python -m worker.bench.memory [--backends none,onnx,torch] [--workers 1,2,3]
        [--images build/bench-corpus] [--count 80] [--env KEY=VALUE ...]
        [--code-root OTHER_CHECKOUT] [--out FILE]

For each backend and worker count it starts a real pool (`qrw worker --workers N`, every
setting at its default: both detector models, the 'simple' class, metrics on) against its
own throwaway redis-server, as ops run it, waits until every worker has registered (each
builds and warms its engine before it does), lets it settle, and reads from /proc:
- PSS (proportional set size, /proc/PID/smaps_rollup) summed over every process of the
  pool: the `qrw worker` supervisor, its worker processes and whatever they fork (RQ's
  scheduler). Pages the workers share with the supervisor after fork count once in total,
  where RSS counts them in every process;
- what one more worker costs: PSS of N workers minus PSS of N-1, same backend;
- private memory (USS: pages no other process maps), and RSS, for comparison;
- start-to-ready: seconds from the pool's start until every worker is registered.
Then, with --count above 0, the pool of --peak-workers processes per backend scans that
many images of the benchmark corpus (`file://` jobs, several in flight), and its PSS is
sampled throughout: the peak of the sum, and the sum once the jobs are done.

PSS divides a shared library's pages among every process on the machine that maps it, so
a figure moves a little with whatever else runs; private memory does not. --code-root runs
the pools from another checkout (a before/after); --env sets variables for the pools.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from worker.bench.report import machine_line, write_section
from worker.harness import Pool, free_port, local_redis
from worker.procfs import Usage, total, tree, usage
from worker.queue import names, producer
from worker.queue.rq_worker import IDLE_TRIM_S

COMMAND = "python -m worker.bench.memory"
QUEUE = "qr-memory"
BACKENDS = ("none", "onnx", "torch")
ROOT = Path(__file__).resolve().parents[2]
JOB_WAIT_S = 300  # the longest wait for one result before the run gives up


@dataclass
class Row:
    backend: str
    workers: int
    ready_s: float
    processes: int
    supervisor: Usage
    worker_pss: list[float]
    helpers: Usage  # processes below the workers (RQ's scheduler)
    pool: Usage
    engine_ms: list[float] = field(default_factory=list)
    added_pss: float | None = None
    peak: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "workers": self.workers,
            "ready_s": round(self.ready_s, 3),
            "processes": self.processes,
            "engine_ready_ms": self.engine_ms,
            "supervisor": _mib(self.supervisor),
            "worker_pss_mib": [round(x, 1) for x in self.worker_pss],
            "helpers": _mib(self.helpers),
            "pool": _mib(self.pool),
            "added_pss_mib": None if self.added_pss is None else round(self.added_pss, 1),
            "peak": self.peak,
        }


def _mib(u: Usage) -> dict[str, float]:
    return {
        "pss_mib": round(u.pss, 1),
        "rss_mib": round(u.rss, 1),
        "private_mib": round(u.private, 1),
    }


def pool_env(
    url: str,
    backend: str,
    images: Path | None,
    extra: dict[str, str],
    code_root: Path | None = None,
) -> dict[str, str]:
    # Every setting at its default (none inherited from the caller's shell, see
    # measure_pool) but these.
    env = {"PYTHONPATH": str(code_root)} if code_root is not None else {}
    env |= {
        "REDIS_URL": url,
        "QRW_BACKEND": backend,
        "QRW_QUEUES": QUEUE,
        "QRW_METRICS_PORT": str(free_port()),
        # info: each worker logs `engine_ready` with the milliseconds its engine took.
        "QRW_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }
    if images is not None:
        env["QRW_FILE_ROOTS"] = str(images.resolve())
    return env | extra


def measure_pool(
    url: str, backend: str, workers: int, args: argparse.Namespace, log: Path
) -> tuple[Row, Pool]:
    client = redis.Redis.from_url(url)
    client.flushall()
    env = pool_env(url, backend, args.images, args.env, args.code_root)
    pool = Pool(env, QUEUE, workers, log, cwd=args.code_root or ROOT, defaults_only=True)
    try:
        ready = pool.wait_ready(client)
        time.sleep(args.settle)
        pids = tree(pool.process.pid)
        worker_pids = pool.worker_pids()
        helpers = [p for p in pids if p != pool.process.pid and p not in worker_pids]
        row = Row(
            backend=backend,
            workers=workers,
            ready_s=ready,
            processes=len(pids),
            supervisor=usage(pool.process.pid),
            worker_pss=[usage(p).pss for p in worker_pids],
            helpers=total(helpers),
            pool=total(pids),
            engine_ms=engine_ready_ms(log),
        )
    except BaseException:
        pool.stop()
        raise
    return row, pool


def engine_ready_ms(log: Path) -> list[float]:
    """What each worker's engine took to load and warm, from its `engine_ready` log line:
    a worker is a fork of the warmed-up supervisor, so this is its own start-to-ready."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '"engine_ready"' in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                found.append(float(json.loads(line)["ms"]))
    return found


def corpus_images(folder: Path | None, count: int) -> list[Path]:
    if folder is None or not folder.is_dir() or count <= 0:
        return []
    suffixes = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".pdf")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    # Every category, not only the first in name order: an even spread over the folder.
    step = max(1, len(found) // count)
    return found[::step][:count]


class Sampler(threading.Thread):
    """PSS summed over the pool's processes, sampled until stopped: the peak of the sum."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(name="pss-sampler", daemon=True)
        self.root = root
        self.interval = interval
        self.peak = Usage()
        self.samples = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            now = total(tree(self.root))
            self.samples += 1
            if now.pss > self.peak.pss:
                self.peak = now


def run_corpus(
    url: str, pool: Pool, images: list[Path], in_flight: int, settle: float
) -> dict[str, Any]:
    # A socket timeout well past BLPOP's own: a slow pool is waited for, not an error.
    client = redis.Redis.from_url(url, socket_timeout=JOB_WAIT_S + 60)
    reply_to = names.reply_key(str(uuid.uuid4()))
    sampler = Sampler(pool.process.pid)
    sampler.start()
    started = time.perf_counter()
    sent = done = 0
    errors: dict[str, int] = {}
    try:
        while done < len(images):
            while sent < len(images) and sent - done < in_flight:
                payload = {"image": f"file://{images[sent].resolve()}", "reply_to": reply_to}
                producer.enqueue(client, payload, queue=QUEUE)
                sent += 1
            popped = client.blpop([reply_to], timeout=JOB_WAIT_S)
            if popped is None:
                raise TimeoutError(f"{len(images) - done} results missing")
            done += 1
            result = json.loads(popped[1])
            if not result.get("ok"):
                code = str((result.get("error") or {}).get("code", "unknown"))
                errors[code] = errors.get(code, 0) + 1
    finally:
        sampler.stopped.set()
        sampler.join()
    # Past the workers' idle trim (worker.queue.rq_worker.IDLE_TRIM_S): memory at rest.
    time.sleep(settle)
    after = total(tree(pool.process.pid))
    return {
        "images": len(images),
        "failed": sum(errors.values()),
        "errors": errors,
        "seconds": round(time.perf_counter() - started, 1),
        "samples": sampler.samples,
        "peak_pss_mib": round(sampler.peak.pss, 1),
        "peak_rss_mib": round(sampler.peak.rss, 1),
        "after_pss_mib": round(after.pss, 1),
    }


def compile_code(root: Path) -> None:
    """Byte-compile the code the pools run first: a pool that compiles it as it imports
    it keeps the compiler's garbage in its heap, and the first row would show it."""
    for package in ("worker", "jobs"):
        if (root / package).is_dir():
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(root / package)],
                check=False,
                capture_output=True,
            )


def measure(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    compile_code(args.code_root or ROOT)
    images = corpus_images(args.images, args.count)
    with tempfile.TemporaryDirectory(prefix="qrw-memory-") as tmp, local_redis() as url:
        for backend in args.backends:
            previous: Row | None = None
            for workers in args.workers:
                log = Path(tmp) / f"{backend}-{workers}.log"
                try:
                    row, pool = measure_pool(url, backend, workers, args, log)
                except (RuntimeError, TimeoutError) as exc:
                    print(f"{backend} x{workers}: {exc}", file=sys.stderr)
                    break
                try:
                    if previous is not None and previous.workers == workers - 1:
                        row.added_pss = row.pool.pss - previous.pool.pss
                    if images and workers == args.peak_workers:
                        row.peak = run_corpus(url, pool, images, args.in_flight, args.settle_after)
                finally:
                    pool.stop()
                rows.append(row)
                previous = row
                print(json.dumps(row.to_dict()), flush=True)
    return rows


def render(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        "## Memory of a worker pool, and its start-to-ready time",
        "",
        f"Command: `{command(args)}`  ",
        f"Machine: {machine_line()}",
        "",
        "A real `qrw worker --workers N` pool per row (defaults: both detector models, the",
        "'simple' class, metrics on), measured once every worker has registered (engine",
        f"loaded and warmed) and {args.settle:g} s more. PSS is summed over every process of",
        "the pool (supervisor, workers, RQ's scheduler that one worker forks); 'added' is",
        "this row's pool PSS minus the row with one worker fewer. Private is memory no other",
        "process maps (USS); RSS counts shared pages once in every process. MiB throughout.",
        "Start-to-ready is from starting `qrw worker` until every worker has registered;",
        "engine ready is the slowest worker's own load and warm-up (its `engine_ready` log",
        "line): a worker is a fork of the supervisor, and a respawned one is ready in that.",
        "",
        "| backend | workers | start-to-ready s | engine ready ms | pool PSS | added per worker "
        "| supervisor PSS | each worker PSS | scheduler PSS | pool private | pool RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        added = "-" if r.added_pss is None else f"{r.added_pss:.0f}"
        each = " / ".join(f"{x:.0f}" for x in r.worker_pss)
        engine = f"{max(r.engine_ms):.0f}" if r.engine_ms else "-"
        lines.append(
            f"| {r.backend} | {r.workers} | {r.ready_s:.2f} | {engine} | **{r.pool.pss:.0f}** "
            f"| {added} "
            f"| {r.supervisor.pss:.0f} | {each} | {r.helpers.pss:.0f} | {r.pool.private:.0f} "
            f"| {r.pool.rss:.0f} |"
        )
    peaks = [r for r in rows if r.peak]
    if peaks:
        first = peaks[0].peak
        lines += [
            "",
            f"Over {first['images']} images of `{args.images}` (an even spread over the folder; "
            f"`file://` jobs, {args.in_flight} in flight), PSS of the pool sampled every 50 ms:",
            "",
            "| backend | workers | images | failed | seconds | peak pool PSS | peak pool RSS "
            "| pool PSS after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in peaks:
            p = r.peak
            lines.append(
                f"| {r.backend} | {r.workers} | {p['images']} | {p['failed']} | {p['seconds']} "
                f"| **{p['peak_pss_mib']:.0f}** | {p['peak_rss_mib']:.0f} "
                f"| {p['after_pss_mib']:.0f} |"
            )
    return "\n".join(lines)


def command(args: argparse.Namespace) -> str:
    parts = [COMMAND]
    if tuple(args.backends) != BACKENDS:
        parts.append(f"--backends {','.join(args.backends)}")
    if tuple(args.workers) != (1, 2, 3):
        parts.append(f"--workers {','.join(map(str, args.workers))}")
    parts += [f"--env {k}={v}" for k, v in args.env.items()]
    if args.code_root:
        parts.append(f"--code-root {args.code_root}")
    if args.out:
        parts.append(f"--out {args.out}")
    return " ".join(parts)


def _pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--env wants KEY=VALUE, not {value!r}")
        pairs[key] = rest
    return pairs


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--workers", default="1,2,3", help="pool sizes, comma-separated")
    parser.add_argument("--images", type=Path, default=ROOT / "build" / "bench-corpus")
    parser.add_argument("--count", type=int, default=80, help="corpus images for the peak")
    parser.add_argument("--peak-workers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after ready")
    parser.add_argument(
        "--settle-after",
        type=float,
        default=IDLE_TRIM_S + 2,
        help="seconds after the corpus (past the workers' idle release), then read",
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the pools (a variant)"
    )
    parser.add_argument("--code-root", type=Path, default=None, help="run another checkout")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    args.workers = sorted({int(n) for n in args.workers.split(",") if n})
    args.env = _pairs(args.env)
    if not args.images.is_dir():
        args.images = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows = measure(args)
    if not rows:
        print("no pool started", file=sys.stderr)
        return 2
    text = render(rows, args)
    print(text)
    if args.out:
        write_section(args.out, "memory", text)
        args.out.with_name("benchmarks-memory.json").write_text(
            json.dumps([r.to_dict() for r in rows], indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
