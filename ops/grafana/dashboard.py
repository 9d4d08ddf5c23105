"""The qr-worker Grafana dashboard, built with Grafana's foundation SDK.

    python ops/grafana/dashboard.py > ops/grafana/qr-worker.json

The committed JSON is what users import (docs/operations.md, *Dashboard and alerts*);
tests/test_ops_monitoring.py checks that this script reproduces it, and runs every panel's
query against a real Prometheus scraping a real worker pool and shim. The SDK is the
`ops` extra (`pip install -e '.[ops]'`); nothing in the runtime imports this file.

Every query names only metrics that worker/metrics.py exports (plus prometheus-client's
`process_resident_memory_bytes`). Variables: `$datasource`, and `$pool` / `$shim`, the
Prometheus `job` labels of the worker pools and the shims (ops/prometheus/prometheus.yml
names them qrw-worker and qrw-shim).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "qr-worker"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
WIDTH, HEIGHT = 12, 8
# Rate windows follow Grafana's $__rate_interval (four scrapes at least), so a panel
# stays right whatever the scrape interval.
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries, stat, bargauge, table
    width: int = WIDTH
    mappings: tuple[tuple[str, str, str], ...] = field(default=())  # value, text, colour


def q(expr: str, legend: str = "", *, instant: bool = False) -> Query:
    return Query(" ".join(expr.split()), legend, instant)


def quantiles(selector: str, by: str, legend: str) -> tuple[Query, ...]:
    """p50 and p95 of qrw_scan_seconds for one selection of stages."""
    return tuple(
        q(
            f"histogram_quantile({p}, sum by ({by}, le) "
            f"(rate(qrw_scan_seconds_bucket{{{selector}}}[{RATE}])))",
            f"p{round(p * 100)} {legend}",
        )
        for p in (0.5, 0.95)
    )


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Throughput and outcomes",
        (
            Panel(
                "Images/s by outcome",
                "Scans per second by source (queue: the worker pool; http: the shim) and "
                "outcome: ok, or the error code (docs/protocol.md).",
                (
                    q(
                        f"sum by (source, outcome) (rate(qrw_scans_total[{RATE}]))",
                        "{{source}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Queue jobs/s by outcome",
                "Jobs the pool finished per second: ok, or the job's error code (worker_lost: "
                "its worker died; internal_error: a bug; storage_unavailable: S3 trouble).",
                (q(f"sum by (outcome) (rate(qrw_jobs_total[{RATE}]))", "{{outcome}}"),),
                unit="ops",
            ),
            Panel(
                "Error codes",
                "Scans per second that ended with an error code, by source and code.",
                (
                    q(
                        "sum by (source, outcome) "
                        f'(rate(qrw_scans_total{{outcome!="ok"}}[{RATE}]))',
                        "{{source}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Share of scans not ok",
                "Scans with an error code over all scans, by source.",
                (
                    q(
                        f'sum by (source) (rate(qrw_scans_total{{outcome!="ok"}}[{RATE}])) '
                        f"/ sum by (source) (rate(qrw_scans_total[{RATE}]))",
                        "{{source}}",
                    ),
                ),
                unit="percentunit",
            ),
        ),
    ),
    (
        "Latency",
        (
            Panel(
                "Scan latency, whole scan (p50 / p95)",
                'qrw_scan_seconds{stage="total"}: one image\'s scan, fetch to result.',
                quantiles('stage="total"', "source", "{{source}}"),
                unit="s",
            ),
            Panel(
                "Queue wait (p50 / p95)",
                'From enqueue to the job\'s start (qrw_scan_seconds{stage="queue_wait"}): how '
                "long jobs waited in the queue. The histogram's top bucket is 30 s.",
                quantiles('source="queue", stage="queue_wait"', "source", "queue wait"),
                unit="s",
            ),
            Panel(
                "p50 per stage",
                "Median time of each cascade stage and phase (fetch, read, decode_image, fast, "
                "the detector sizes, thorough), over the scans that ran it.",
                (
                    q(
                        "histogram_quantile(0.5, sum by (source, stage, le) (rate("
                        f'qrw_scan_seconds_bucket{{stage!~"total|queue_wait"}}[{RATE}])))',
                        "{{source}} {{stage}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "p95 per stage",
                "95th percentile of each cascade stage and phase.",
                (
                    q(
                        "histogram_quantile(0.95, sum by (source, stage, le) (rate("
                        f'qrw_scan_seconds_bucket{{stage!~"total|queue_wait"}}[{RATE}])))',
                        "{{source}} {{stage}}",
                    ),
                ),
                unit="s",
            ),
        ),
    ),
    (
        "Codes read",
        (
            Panel(
                "Codes read per second, by the stage that read them",
                "Each code counts under the cascade stage that read it: a code under 'medium' "
                "is one the fast pass and the small detector missed.",
                (q(f"sum by (stage) (rate(qrw_codes_read_total[{RATE}]))", "{{stage}}"),),
                unit="ops",
            ),
            Panel(
                "Codes read by stage, over the time range",
                "Which stage reads what share of the codes, over the dashboard's time range.",
                (
                    q(
                        "sum by (stage) (increase(qrw_codes_read_total[$__range]))",
                        "{{stage}}",
                        instant=True,
                    ),
                ),
                kind="bargauge",
            ),
            Panel(
                "Codes per second by payload scheme",
                "Codes by the payload scheme their text is (docs/payloads.md); 'none': no known "
                "scheme.",
                (q(f"sum by (scheme) (rate(qrw_codes_by_scheme_total[{RATE}]))", "{{scheme}}"),),
                unit="ops",
            ),
            Panel(
                "Codes by payload scheme, over the time range",
                "Codes per scheme over the dashboard's time range.",
                (
                    q(
                        "sum by (scheme) (increase(qrw_codes_by_scheme_total[$__range]))",
                        "{{scheme}}",
                        instant=True,
                    ),
                ),
                kind="bargauge",
            ),
        ),
    ),
    (
        "Queue",
        (
            Panel(
                "Queue depth and running jobs",
                "Jobs waiting in each queue and jobs running now, read from Redis at each "
                "scrape (every pool reports the same numbers: the maximum is shown).",
                (
                    q("max by (queue) (qrw_queue_depth)", "waiting {{queue}}"),
                    q("max by (queue) (qrw_queue_started)", "running {{queue}}"),
                ),
            ),
            Panel(
                "Oldest waiting job, and time to drain the backlog",
                "Age of the job at the head of each queue (qrw_queue_oldest_seconds, read from "
                "Redis at each scrape), and jobs waiting over jobs finished per second (5 min): "
                "about how long the newest job waits at the current pace. See 'Queue wait' for "
                "the wait of the jobs that started.",
                (
                    q("max by (queue) (qrw_queue_oldest_seconds)", "oldest {{queue}}"),
                    q(
                        "max by (queue) (qrw_queue_depth) / on () group_left "
                        "sum(rate(qrw_jobs_total[5m]))",
                        "drain {{queue}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Failed registry",
                "Jobs in RQ's failed registry: jobs that used up their retries.",
                (q("max by (queue) (qrw_queue_failed)", "{{queue}}"),),
            ),
            Panel(
                "Redis persistence",
                "1: AOF or RDB save points, queued jobs survive a Redis restart; 0: NONE, a "
                "restart loses every queued job; -1: unknown (CONFIG GET refused: check by hand).",
                (q("min by (mode) (qrw_redis_persistence)", "{{mode}}", instant=True),),
                kind="stat",
                width=WIDTH // 2,
                mappings=(
                    ("1", "persistent", "green"),
                    ("0", "NONE", "red"),
                    ("-1", "unknown", "orange"),
                ),
            ),
            Panel(
                "Redis reachable",
                "Whether each pool, and each shim that depends on Redis (QRW_READY_NEEDS_REDIS), "
                "got an answer to PING within a second at its last scrape (qrw_redis_up). "
                "Unreachable: no job is queued, run or delivered (QrwRedisDown).",
                (q("min by (job, instance) (qrw_redis_up)", "{{instance}}", instant=True),),
                kind="stat",
                width=WIDTH // 2,
                mappings=(("1", "reachable", "green"), ("0", "UNREACHABLE", "red")),
            ),
        ),
    ),
    (
        "Workers",
        (
            Panel(
                "Workers: registered and started",
                "Registered: RQ workers in Redis (all pools). Started: worker processes each pool "
                "has started since it began (a dead process's series stays until the pool "
                "restarts), so started above the pool's QRW_WORKERS means workers died and "
                "were respawned.",
                (
                    q("max(qrw_workers)", "registered in Redis"),
                    q(
                        'count by (instance) (qrw_model_info{job=~"$pool"} == 1)',
                        "started {{instance}}",
                    ),
                ),
            ),
            Panel(
                "Memory",
                "The worker pool's processes by role (supervisor, workers, their children) as "
                "PSS, read from /proc by the pool (qrw_pool_memory_bytes: pages shared after "
                "fork counted once), and the shim's resident memory (one process). The pods' "
                "limit is 1 GiB (ops/k8s).",
                (
                    q(
                        'sum by (instance, role) (qrw_pool_memory_bytes{job=~"$pool", kind="pss"})',
                        "pool {{instance}} {{role}}",
                    ),
                    q(
                        'process_resident_memory_bytes{job=~"$shim"}',
                        "shim {{instance}}",
                    ),
                ),
                unit="bytes",
            ),
            Panel(
                "Processes by detector runtime and models",
                "Processes started with each detector runtime and models (dead ones included).",
                (q("count by (job, backend, model) (qrw_model_info == 1)", "", instant=True),),
                kind="table",
            ),
            Panel(
                "Targets answering",
                "Pool and shim targets whose /metrics Prometheus scraped at its last try (`up`), "
                "against the targets it scrapes. Fewer answering: QrwPoolDown, QrwShimDown; "
                "none: QrwNoWorkers, QrwNoShims.",
                (
                    q('sum by (job) (up{job=~"$pool|$shim"})', "{{job}} answering", instant=True),
                    q('count by (job) (up{job=~"$pool|$shim"})', "{{job}} targets", instant=True),
                ),
                kind="stat",
            ),
        ),
    ),
    (
        "HTTP shim",
        (
            Panel(
                "Shim answers/s by status",
                "POST /detect answers by HTTP status (499: the client left before the answer).",
                (q(f"sum by (status) (rate(qrw_http_requests_total[{RATE}]))", "{{status}}"),),
                unit="reqps",
            ),
            Panel(
                "Shim 503 / 504 per second",
                "503: every scan slot taken past QRW_HTTP_SLOT_WAIT_MS (add shim processes or "
                "hosts); 504: scans past their deadline (QRW_DEADLINE_MS or deadline_ms).",
                (
                    q(
                        "sum by (status) "
                        f'(rate(qrw_http_requests_total{{status=~"503|504"}}[{RATE}]))',
                        "{{status}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Shim scans in flight",
                "Scans the shims run now, against QRW_HTTP_CONCURRENCY per process.",
                (q('sum by (instance) (qrw_http_scans_in_flight{job=~"$shim"})', "{{instance}}"),),
            ),
        ),
    ),
    (
        "Backfill",
        (
            Panel(
                "Backfill runs",
                "Each run's state, read from its state hash in Redis at each scrape "
                "(docs/backfill.md).",
                (
                    q(
                        "max by (run, state) (qrw_backfill_state) == 1",
                        "{{run}} {{state}}",
                        instant=True,
                    ),
                ),
                kind="table",
            ),
            Panel(
                "Backfill progress: jobs collected / enqueued",
                "Jobs whose results the run has written, over the jobs it has enqueued so far "
                "(the listing may still be going on: see objects listed).",
                (
                    q(
                        "max by (run) (qrw_backfill_done) / max by (run) (qrw_backfill_jobs)",
                        "{{run}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Backfill objects",
                "Objects listed, enqueued, written without error and with an error code, per run.",
                (
                    q("max by (run) (qrw_backfill_listed)", "listed {{run}}"),
                    q("max by (run) (qrw_backfill_enqueued)", "enqueued {{run}}"),
                    q("max by (run) (qrw_backfill_objects_ok)", "ok {{run}}"),
                    q("max by (run) (qrw_backfill_objects_failed)", "failed {{run}}"),
                ),
            ),
            Panel(
                "Backfill objects/s and jobs in flight",
                "Objects written per second, and the run's jobs in Redis now (at most "
                "--max-in-flight).",
                (
                    q(
                        "max by (run) (deriv(qrw_backfill_objects_ok[5m]) "
                        "+ deriv(qrw_backfill_objects_failed[5m]))",
                        "objects/s {{run}}",
                    ),
                    q("max by (run) (qrw_backfill_in_flight)", "in flight {{run}}"),
                ),
            ),
        ),
    ),
)


def target(query: Query, ref: str, kind: str) -> prometheus.Dataquery:
    built = (
        prometheus.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend or "__auto")
        .ref_id(ref)
        .datasource(DATASOURCE)
    )
    if query.instant:
        # A table lists the labels as columns; a bar gauge or a stat draws one value per
        # series, named by the legend.
        table_format = PromQueryFormat.TABLE if kind == "table" else PromQueryFormat.TIME_SERIES
        built = built.instant().format(table_format)
    return built


def panel(spec: Panel) -> Any:
    kinds = {
        "timeseries": timeseries.Panel,
        "stat": stat.Panel,
        "bargauge": bargauge.Panel,
        "table": table.Panel,
    }
    built = (
        kinds[spec.kind]()
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(HEIGHT)
    )
    for index, query in enumerate(spec.queries):
        built = built.with_target(target(query, chr(ord("A") + index), spec.kind))
    if spec.mappings:
        options = {
            value: model.ValueMappingResult(text=text, color=colour, index=n)
            for n, (value, text, colour) in enumerate(spec.mappings)
        }
        built = built.mappings([model.ValueMap(options=options)])
    if spec.kind in ("bargauge", "stat"):
        # The last value of each series: these panels' queries are instant ones.
        built = built.reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    if spec.kind == "bargauge":
        built = built.orientation(common.VizOrientation.HORIZONTAL)
    if spec.kind == "stat":
        built = built.color_mode(common.BigValueColorMode.BACKGROUND)
    if spec.kind == "timeseries":
        built = built.legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    return built


def job_variable(name: str, label: str, metric: str, default: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, job)")
        .current(model.VariableOption(text=default, value=default, selected=True))
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(False)
    )


def build() -> dict[str, Any]:
    board = (
        dashboard.Dashboard("qr-worker")
        .uid(UID)
        .description(
            "QR worker pool and HTTP shim: throughput, latency per stage, codes read, queue "
            "and Redis, workers and targets answering, shim answers, backfill runs. Generated "
            "by ops/grafana/dashboard.py."
        )
        .tags(["qr-worker"])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
        .with_variable(job_variable("pool", "Worker pool job", "qrw_queue_depth", "qrw-worker"))
        .with_variable(job_variable("shim", "Shim job", "qrw_http_requests_total", "qrw-shim"))
    )
    for title, panels in ROWS:
        board = board.with_row(dashboard.Row(title))
        for spec in panels:
            board = board.with_panel(panel(spec))
    document = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    # Panel ids: Grafana needs them unique; numbered in order, so the file is stable.
    for number, item in enumerate(document["panels"], start=1):
        item["id"] = number
    return document


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
