"""Prometheus metrics shared by the HTTP shim and the queue workers.

Both observe every scan the same way (latency per stage, outcome by error code, codes
read per stage and per payload scheme), labelled with where the scan came from
(`source="http"` or `"queue"`). `qrw worker` runs several processes: it sets prometheus-client's
multiprocess directory before any of them starts, and serves them all, plus the queue
gauges read from Redis at scrape time, on one port (QRW_METRICS_PORT).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.backfill.state import COUNTERS, RunState
from worker.engine.errors import ErrorCode
from worker.engine.results import ScanResult
from worker.engine.stages import soft
from worker.metrics_env import multiprocess_enabled
from worker.procfs import children, descendants
from worker.queue import names, persistence, runtime
from worker.settings import Settings

__all__ = ["multiprocess_enabled"]

# From a fast-path read of a clean page (a few ms) to a thorough pass over a 48 MP photo.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SCAN_SECONDS = Histogram(
    "qrw_scan_seconds",
    "Time of one scan, whole (stage='total') and per cascade stage and phase.",
    ["source", "stage"],
    buckets=_LATENCY_BUCKETS,
)
SCANS = Counter(
    "qrw_scans_total", "Scans by outcome: 'ok' or the error code.", ["source", "outcome"]
)
CODES = Counter(
    "qrw_codes_read_total", "QR codes read, by the stage that read them.", ["source", "stage"]
)
# Reads by our soft-decision decoder (issue 19): how often it finds what zxing-cpp could not.
# Each code's corrected errors and erasures are in the result (codes[].errors_corrected,
# codes[].erasures); a label per count would be unbounded.
SOFT_READS = Counter(
    "qrw_soft_reads_total",
    "QR codes read by the soft-decision decoder (decoder 'qrw-soft'), by the stage.",
    ["source", "stage"],
)
# The parser's own scheme names (worker.schemes: a fixed set, so the label stays bounded),
# "none" for a code whose text is no known scheme.
CODES_BY_SCHEME = Counter(
    "qrw_codes_by_scheme_total",
    "QR codes read, by the payload scheme their text is ('none': no known scheme).",
    ["source", "scheme"],
)
# A PDF page's kind (worker.engine.pdf_pages): born_digital, scanned or mixed, a fixed set.
PDF_PAGES = Counter(
    "qrw_pdf_pages_total",
    "PDF pages scanned, by kind: born_digital, scanned or mixed (result page_kinds).",
    ["source", "kind"],
)
JOBS = Counter(
    "qrw_jobs_total", "Queue jobs finished, by outcome: 'ok' or the error code.", ["outcome"]
)
HTTP_REQUESTS = Counter(
    "qrw_http_requests_total", "HTTP requests by route and status.", ["route", "status"]
)
HTTP_IN_FLIGHT = Gauge(
    "qrw_http_scans_in_flight", "Scans the shim is running now.", multiprocess_mode="livesum"
)
MODEL = Gauge(
    "qrw_model_info",
    "The detector runtime and models this process runs (value 1).",
    ["backend", "model"],
    multiprocess_mode="liveall",
)


def observe_scan(result: ScanResult | dict[str, Any], source: str) -> None:
    """Record one engine result (typed, or its JSON form as the queue has it)."""
    document = result.to_dict() if isinstance(result, ScanResult) else result
    error = document.get("error")
    SCANS.labels(source, error["code"] if error else "ok").inc()
    for phase, ms in (document.get("timings_ms") or {}).items():
        if isinstance(ms, int | float):
            SCAN_SECONDS.labels(source, phase).observe(ms / 1000.0)
    for kind in document.get("page_kinds") or []:
        PDF_PAGES.labels(source, str(kind)).inc()
    for code in document.get("codes") or []:
        CODES.labels(source, code.get("stage", "unknown")).inc()
        if code.get("decoder") == soft.DECODER:
            SOFT_READS.labels(source, code.get("stage", "unknown")).inc()
        payload = code.get("payload")
        scheme = payload.get("scheme") if isinstance(payload, dict) else None
        CODES_BY_SCHEME.labels(source, str(scheme or "none")).inc()


def set_model(backend: str, model: str | None) -> None:
    MODEL.labels(backend, model or "none").set(1)


# Every answer the shim gives /detect (worker/http/app.py: 499 is a client that left).
_HTTP_STATUSES = ("200", "400", "408", "413", "415", "422", "499", "500", "503", "504")


def start(source: str, backend: str, model: str | None) -> None:
    """What a process records, created at 0 before its first scan: a counter series born at
    1 by its first increment has no earlier sample, so `increase()` and `rate()` miss it, and
    the alerts on a process's first 500 or worker_lost would never fire."""
    set_model(backend, model)
    outcomes = ["ok", *(code.value for code in ErrorCode)]
    for outcome in outcomes:
        SCANS.labels(source, outcome)
        if source == "queue":
            JOBS.labels(outcome)
    if source == "http":
        for status in _HTTP_STATUSES:
            HTTP_REQUESTS.labels("/detect", status)


class QueueCollector(Collector):
    """Queue depth, running and failed jobs, and live workers, read from Redis per scrape."""

    def __init__(self, connection: Any, queues: Iterable[str]) -> None:
        self.connection = connection
        self.queues = tuple(queues)

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("qrw_queue_depth", "Jobs waiting in the queue.", labels=["queue"])
        started = GaugeMetricFamily(
            "qrw_queue_started", "Jobs running now (RQ's started registry).", labels=["queue"]
        )
        failed = GaugeMetricFamily(
            "qrw_queue_failed", "Jobs in RQ's failed registry.", labels=["queue"]
        )
        workers = GaugeMetricFamily("qrw_workers", "RQ workers registered in Redis.")
        oldest = GaugeMetricFamily(
            "qrw_queue_oldest_seconds",
            "Age of the job at the head of the queue (the longest waiting), 0 when empty.",
            labels=["queue"],
        )
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                for queue in self.queues:
                    pipe.llen(names.rq_queue_key(queue))
                    pipe.zcard(names.rq_started_key(queue))
                    pipe.zcard(names.rq_failed_key(queue))
                    pipe.lindex(names.rq_queue_key(queue), 0)
                pipe.scard(names.RQ_WORKERS)
                values = pipe.execute()
            heads = [values[4 * index + 3] for index in range(len(self.queues))]
            with self.connection.pipeline(transaction=False) as pipe:
                for head in heads:
                    if head:
                        pipe.hget(names.rq_job_key(_text(head)), "enqueued_at")
                    else:
                        pipe.echo(b"")  # an empty queue: keeps the answers in queue order
                enqueued = pipe.execute()
        except Exception:  # Redis away: the scrape still answers, without these gauges
            return
        now = datetime.now(UTC)
        for index, queue in enumerate(self.queues):
            depth.add_metric([queue], values[4 * index])
            started.add_metric([queue], values[4 * index + 1])
            failed.add_metric([queue], values[4 * index + 2])
            oldest.add_metric([queue], _age_s(enqueued[index], now))
        workers.add_metric([], values[-1])
        yield from (depth, started, failed, workers, oldest)


def _age_s(enqueued_at: bytes | None, now: datetime) -> float:
    """Seconds since an RQ timestamp; 0 for none (an empty queue, or a head job whose hash
    is gone or unreadable: a producer's mistake shows in its result, not here)."""
    if not enqueued_at:
        return 0.0
    try:
        moment = datetime.strptime(_text(enqueued_at), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return max(0.0, (now - moment).total_seconds())


class PoolMemoryCollector(Collector):
    """Memory of the pool's processes, read from /proc per scrape: the supervisor (the
    process serving the metrics), its worker processes, and their own children (job
    processes, RQ's scheduler), summed by role. prometheus-client's multiprocess mode
    exports no process metrics, and RSS alone double-counts the pages forked workers share
    with the supervisor: PSS is what the pool costs the machine (and what its pod's memory
    limit sees, near enough)."""

    ROLES = ("supervisor", "worker", "child")

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()

    def collect(self) -> Iterator[Metric]:
        memory = GaugeMetricFamily(
            "qrw_pool_memory_bytes",
            "Memory of the pool's processes by role, summed: kind='pss' (proportional set "
            "size: shared pages split between their users) or 'rss' (resident set).",
            labels=["role", "kind"],
        )
        processes = GaugeMetricFamily(
            "qrw_pool_processes", "The pool's processes by role.", labels=["role"]
        )
        largest = GaugeMetricFamily(
            "qrw_pool_process_max_rss_bytes",
            "The largest resident set of one process of the role (the per-process limit).",
            labels=["role"],
        )
        totals = {role: {"pss": 0.0, "rss": 0.0, "n": 0.0, "max": 0.0} for role in self.ROLES}
        for pid, role in _family(self.pid):
            found = _rollup(pid)
            if found is None:
                continue  # exited meanwhile
            entry = totals[role]
            entry["pss"] += found["Pss"]
            entry["rss"] += found["Rss"]
            entry["n"] += 1
            entry["max"] = max(entry["max"], found["Rss"])
        for role, entry in totals.items():
            memory.add_metric([role, "pss"], entry["pss"])
            memory.add_metric([role, "rss"], entry["rss"])
            processes.add_metric([role], entry["n"])
            largest.add_metric([role], entry["max"])
        yield from (memory, processes, largest)


def _family(root: int) -> Iterator[tuple[int, str]]:
    """`root` as the supervisor, its children as workers, anything below as their children."""
    yield root, "supervisor"
    for child in children(root):
        yield child, "worker"
        for pid in descendants(child):
            yield pid, "child"


def _rollup(pid: int) -> dict[str, float] | None:
    """Rss and Pss of a process in bytes, from /proc/<pid>/smaps_rollup."""
    wanted: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    wanted[key] = float(rest.split()[0]) * 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return wanted if len(wanted) == 2 else None


# A run's state hash (worker.backfill.state): its `state` and its counters, each gauge with
# its help text (a counter without one fails here, at import).
BACKFILL_STATES = tuple(member.value for member in RunState)
_BACKFILL_HELP = {
    "listed": "Objects the run's listing went past (taken or skipped).",
    "skipped": "Objects the run's filters left out.",
    "enqueued": "Objects in the jobs the run enqueued.",
    "jobs": "Jobs the run enqueued.",
    "done": "Jobs whose result the run has collected.",
    "failed": "Collected jobs whose result was not ok.",
    "objects_ok": "Output lines of objects read without error.",
    "objects_failed": "Output lines of objects that ended with an error code.",
    "parts": "Output part files written.",
    "cancelled": "Objects taken off the queue by a cancel.",
    "bad_lines": "Manifest lines that are not references.",
}
BACKFILL_COUNTS = {counter: _BACKFILL_HELP[counter] for counter in COUNTERS}
# Every run ever started stays in the set; a scrape reads at most this many of them.
_MAX_BACKFILLS = 500


class BackfillCollector(Collector):
    """Each backfill run's state and counts, read from its state hash in Redis per scrape,
    labelled with the run's name: the pool shows every run, whichever machine drives it."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def collect(self) -> Iterator[Metric]:
        try:
            runs = sorted(_text(name) for name in self.connection.smembers(names.BACKFILLS))
            runs = runs[:_MAX_BACKFILLS]
            with self.connection.pipeline(transaction=False) as pipe:
                for run in runs:
                    pipe.hgetall(names.backfill_key(run))
                    pipe.hlen(names.backfill_inflight_key(run))
                values = pipe.execute()
        except Exception:  # Redis away: the scrape still answers, without these gauges
            return
        state = GaugeMetricFamily(
            "qrw_backfill_state",
            "1 for the state each backfill run is in, 0 for the others.",
            labels=["run", "state"],
        )
        counts = {
            field: GaugeMetricFamily(f"qrw_backfill_{field}", text, labels=["run"])
            for field, text in BACKFILL_COUNTS.items()
        }
        in_flight = GaugeMetricFamily(
            "qrw_backfill_in_flight",
            "Jobs of the run in Redis now (queued, running or with a result not yet written).",
            labels=["run"],
        )
        for index, run in enumerate(runs):
            fields = {_text(k): _text(v) for k, v in values[2 * index].items()}
            if not fields:
                continue  # named in the set, its state gone (deleted by hand)
            current = fields.get("state", "")
            for name in BACKFILL_STATES:
                state.add_metric([run, name], 1.0 if current == name else 0.0)
            for field, family in counts.items():
                number = _number(fields.get(field))
                if number is not None:
                    family.add_metric([run], number)
            in_flight.add_metric([run], values[2 * index + 1])
        yield state
        yield from counts.values()
        yield in_flight


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class PersistenceCollector(Collector):
    """Whether Redis would keep queued jobs across a restart, read per scrape (so a fix made
    with CONFIG SET shows without restarting workers)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def collect(self) -> Iterator[Metric]:
        found = persistence.check(self.connection)
        gauge = GaugeMetricFamily(
            "qrw_redis_persistence",
            "1: Redis persists (AOF or RDB save points), queued jobs survive a restart; "
            "0: it does not, a restart loses them; -1: unknown (CONFIG GET refused).",
            labels=["mode"],
        )
        gauge.add_metric([found.mode.value], found.gauge)
        yield gauge


# Seconds one Redis command of a scrape may take: the few a scrape sends stay far inside its
# timeout (Prometheus's default is 10 s), so a Redis that hangs shows as qrw_redis_up 0
# instead of failing the whole scrape, which would look like the process itself was down.
REDIS_SCRAPE_TIMEOUT_S = 1.0


def scrape_connection(settings: Settings) -> redis.Redis:
    """A Redis client for what /metrics reads: each command waits at most
    REDIS_SCRAPE_TIMEOUT_S. Not the queue's client, which waits 5 s to connect, has no read
    timeout and retries with backoff, riding out what these gauges are meant to show. A
    closed connection (Redis restarted since the last scrape) is retried once at once, so it
    is reopened rather than reported as an outage; a timeout is not retried. Built where
    every client is (worker.queue.runtime): Sentinel, TLS and the ACL user as configured."""
    return runtime.connect(
        settings,
        socket_timeout=REDIS_SCRAPE_TIMEOUT_S,
        socket_connect_timeout=REDIS_SCRAPE_TIMEOUT_S,
        socket_keepalive=False,
        health_check_interval=0,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


class RedisUpCollector(Collector):
    """qrw_redis_up: whether Redis answers PING within REDIS_SCRAPE_TIMEOUT_S, per scrape."""

    def __init__(self, settings: Settings) -> None:
        self.client = scrape_connection(settings)

    def answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # whatever the failure, Redis did not answer; a raise here would
            return False  # fail the whole scrape

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "qrw_redis_up",
            "1: Redis (REDIS_URL) answered PING at this scrape; 0: it did not, within "
            f"{REDIS_SCRAPE_TIMEOUT_S:g} s.",
        )
        gauge.add_metric([], 1.0 if self.answers() else 0.0)
        yield gauge


def multiprocess_registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for collector in extra:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry | None = None, extra: Iterable[Collector] = ()) -> bytes:
    """The registry's text (the process's default one if none), then `extra`'s: collectors
    of one application, kept out of the process-wide registry that every app shares."""
    from prometheus_client import REGISTRY

    text = generate_latest(registry or REGISTRY)
    collectors = list(extra)
    if collectors:
        own = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            own.register(collector)
        text += generate_latest(own)
    return text
