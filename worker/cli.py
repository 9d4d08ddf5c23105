"""The `qrw` command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from worker import rules
from worker.console import IMAGE_SUFFIXES, print_job_results, print_table, scheme
from worker.queue import names
from worker.settings import Settings, SettingsError, parse_one

if TYPE_CHECKING:
    import redis

    from worker.engine import Code


def _whole(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An argparse type: ASCII digits only, low..high."""
    lead = f"{what} " if what else ""

    def parse(text: str) -> int:
        if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"{lead}must be a whole number {low}..{high}, got {rules.quote(text)}"
            )
        return int(text)

    return parse


def _above_zero(high: int, meaning: str) -> Callable[[str], float]:
    """An argparse type: a number with 0 < value <= high; `meaning` opens the message."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 < value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"{meaning} <= {high}, got {rules.quote(text)}")
        return value

    return parse


_sample_count = _whole(1, 1000)
_wait_seconds = _above_zero(86_400, "must be seconds, 0 < S")
_images_per_s = _above_zero(1_000_000, "--rate must be images per second, 0 < R")


def _rule(check: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type from a worker.rules rule: the CLI refuses exactly what the queue
    payload and the shim refuse, with the same message."""

    def parse(text: str) -> object:
        try:
            return check(text)
        except rules.RuleViolation as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _setting(name: str) -> Callable[[str], object]:
    """An argparse type for an option that overrides a setting: the setting's own range."""

    def parse(text: str) -> object:
        try:
            value = parse_one(name, text)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value[0] if isinstance(value, tuple) and len(value) == 1 else value

    return parse


def _queue_list(text: str) -> tuple[str, ...]:
    """`--queues`: each argument may itself be a comma-separated list, as QRW_QUEUES is."""
    try:
        return tuple(parse_one("queues", text))
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _one_queue(text: str) -> str:
    names = _queue_list(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"name one queue, not a list: {text!r}")
    return names[0]


def worker_queues(groups: Sequence[tuple[str, ...]] | None) -> tuple[str, ...] | None:
    """The queues `--queues` names, in order, by the same rule as QRW_QUEUES (no repeats)."""
    if not groups:
        return None
    try:
        return tuple(parse_one("queues", ",".join(name for group in groups for name in group)))
    except SettingsError as exc:
        print(f"qrw: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_want = _rule(rules.want)
_deadline_ms = _rule(rules.deadline_ms_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qrw", description="qr-worker: read the QR codes on invoice images."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = commands.add_parser("scan", help="scan image files or folders and print what they hold")
    scan.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    scan.add_argument("--json", action="store_true", help="one JSON object per input per line")
    scan.add_argument("--want", type=_want, default=None, metavar="first|all")
    scan.add_argument("--deadline-ms", type=_deadline_ms, default=None, metavar="N")
    scan.set_defaults(needs_engine=True, handler=_cmd_scan)

    work = commands.add_parser("worker", help="run queue workers (RQ) until SIGTERM")
    work.add_argument(
        "--queues", nargs="+", type=_queue_list, default=None, help="default: QRW_QUEUES"
    )
    work.add_argument(
        "--workers", type=_setting("workers"), default=None, help="default: QRW_WORKERS"
    )
    work.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    work.set_defaults(needs_engine=True, handler=_cmd_worker)

    enq = commands.add_parser("enqueue", help="enqueue scan jobs for image references")
    enq.add_argument("refs", nargs="+", metavar="IMAGE_REF", help="s3://bucket/key or file:///path")
    enq.add_argument(
        "--queue", type=_one_queue, default=None, help="default: the first of QRW_QUEUES"
    )
    enq.add_argument("--batch", action="store_true", help="one job for all references")
    enq.add_argument("--want", type=_want, default=None, metavar="first|all")
    enq.add_argument("--deadline-ms", type=_deadline_ms, default=None, metavar="N")
    enq.add_argument(
        "--wait",
        type=_wait_seconds,
        default=None,
        metavar="SECONDS",
        help="wait for the results (on a reply list, no polling) and print them",
    )
    enq.add_argument("--json", action="store_true", help="with --wait: print results as JSONL")
    enq.set_defaults(handler=_cmd_enqueue)

    demo = commands.add_parser("demo", help="Redis, workers and sample invoices, end to end")
    demo.add_argument("--samples", type=Path, default=Path("build/samples"))
    demo.add_argument("--count", type=_sample_count, default=12)
    demo.add_argument("--workers", type=_setting("workers"), default=2)
    demo.set_defaults(needs_engine=True, handler=_cmd_demo)

    serve = commands.add_parser("serve", help="run the HTTP shim (POST /detect) until SIGTERM")
    serve.add_argument(
        "--host", type=_setting("http_host"), default=None, help="default: QRW_HTTP_HOST"
    )
    serve.add_argument(
        "--port", type=_setting("http_port"), default=None, help="default: QRW_HTTP_PORT"
    )
    serve.set_defaults(needs_engine=True, handler=_cmd_serve)

    status = commands.add_parser("status", help="queues, workers, failures and throughput")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(handler=_cmd_status)

    commands.add_parser("bench", help="accuracy, speed and memory against the peers (--help)")
    _add_backfill(commands)
    return parser


# -- qrw backfill ------------------------------------------------------------------------------


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--modified-after must be an ISO 8601 date or time, e.g. 2024-01-31 or "
            f"2024-01-31T12:00:00Z, got {rules.quote(text)}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _shard(text: str) -> tuple[int, int]:
    index, slash, count = text.partition("/")
    if (
        slash
        and index.isascii()
        and index.isdigit()
        and count.isascii()
        and count.isdigit()
        and 0 <= int(index) < int(count) <= 1_000_000
    ):
        return int(index), int(count)
    raise argparse.ArgumentTypeError(
        f"--shard must be i/n with 0 <= i < n, got {rules.quote(text)}"
    )


def _error_codes(text: str) -> list[str]:
    from worker.engine.errors import ErrorCode

    known = {code.value for code in ErrorCode}
    codes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [code for code in codes if code not in known]
    if not codes or unknown:
        raise argparse.ArgumentTypeError(
            f"--errors must be error codes separated by commas ({', '.join(sorted(known))}), "
            f"got {rules.quote(text)}"
        )
    return codes


def _add_backfill(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from worker.backfill import Options
    from worker.queue.payloads import MAX_BATCH

    defaults = Options()
    backfill = commands.add_parser(
        "backfill", help="re-read an archive of stored images through the workers, resumably"
    )
    actions = backfill.add_subparsers(dest="action", required=True, metavar="ACTION")

    start = actions.add_parser("start", help="start a run (and drive it until it ends)")
    start.add_argument("name", metavar="NAME", help="the run's name: letters, digits, - and _")
    source = start.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--source", action="append", metavar="s3://BUCKET/PREFIX/", help="repeatable"
    )
    source.add_argument("--manifest", metavar="PATH|s3://BUCKET/KEY")
    start.add_argument("--out", required=True, metavar="s3://BUCKET/PREFIX/|file:///DIR")
    start.add_argument(
        "--include", action="append", default=[], metavar="GLOB", help="file-name glob; repeatable"
    )
    start.add_argument("--modified-after", type=_date, default=None, metavar="DATE")
    start.add_argument(
        "--max-bytes", type=_whole(0, 2**63 - 1, "--max-bytes"), default=None, metavar="N"
    )
    start.add_argument("--limit", type=_whole(1, 2**63 - 1, "--limit"), default=None, metavar="N")
    start.add_argument("--shard", type=_shard, default=None, metavar="I/N")
    start.add_argument("--dry-run", action="store_true", help="list and count; enqueue nothing")
    start.add_argument(
        "--batch",
        type=_whole(1, MAX_BATCH, "--batch"),
        default=defaults.batch,
        metavar="K",
        help=f"images per job (default {defaults.batch})",
    )
    start.add_argument(
        "--max-in-flight",
        type=_whole(1, 100_000, "--max-in-flight"),
        default=defaults.max_in_flight,
        metavar="N",
        help=f"jobs in Redis at once (default {defaults.max_in_flight})",
    )
    start.add_argument("--rate", type=_images_per_s, default=None, metavar="IMAGES_PER_S")
    start.add_argument(
        "--queue", type=_one_queue, default=defaults.queue, help="default: qr-backfill"
    )
    start.add_argument("--want", type=_want, default=None, metavar="first|all")
    start.add_argument("--deadline-ms", type=_deadline_ms, default=None, metavar="N")
    start.set_defaults(handler=_cmd_backfill_start)

    status = actions.add_parser("status", help="state and counts of one run, or of all")
    status.add_argument("name", nargs="?", metavar="NAME")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_backfill_status)

    for action, text, handler in (
        ("pause", "stop enqueueing (results still collected)", _cmd_backfill_pause),
        ("resume", "continue a paused run, or one whose process died", _cmd_backfill_resume),
        (
            "cancel",
            "enqueue nothing more, drop queued jobs, write the summary",
            _cmd_backfill_cancel,
        ),
    ):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("name", metavar="NAME")
        sub.set_defaults(handler=handler)

    retry = actions.add_parser("retry", help="a new run over the objects that failed with CODEs")
    retry.add_argument("name", metavar="NAME")
    retry.add_argument("--errors", type=_error_codes, required=True, metavar="CODE,...")
    retry.set_defaults(handler=_cmd_backfill_retry)

    report = actions.add_parser("report", help="the numbers of a run (summary.json)")
    report.add_argument("name", metavar="NAME")
    report.add_argument("--json", action="store_true")
    report.set_defaults(handler=_cmd_backfill_report)


def _backfill(command: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
    """A BackfillError (or an unreachable Redis) is one line and status 2."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        import redis

        from worker import logs
        from worker.backfill import BackfillError

        logs.configure(settings)
        try:
            return command(args, settings)
        except BackfillError as exc:
            print(f"qrw: error: {exc}", file=sys.stderr)
            return 2
        except redis.ConnectionError as exc:
            print(
                f"qrw: error: Redis at {settings.redis_url} is unreachable: {exc}", file=sys.stderr
            )
            return 2
        except KeyboardInterrupt:
            name = getattr(args, "name", "")
            print(f"qrw: interrupted; continue with `qrw backfill resume {name}`", file=sys.stderr)
            return 130

    return run


def _driving(settings: Settings, name: str) -> int:
    """Drive the run here until it ends; 0 when it is done or cancelled."""
    import signal

    from worker.backfill import runner
    from worker.queue import runtime

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (a Job stopped): release the lease on the way out

    signal.signal(signal.SIGTERM, stop)
    connection = runtime.connect(settings.redis_url)
    final = runner.drive(connection, settings, name, progress=sys.stderr.isatty())
    print(f"backfill {name}: {final}")
    if final in ("done", "cancelled"):
        return 0
    import redis

    try:
        reason = connection.hget(names.backfill_key(name), "error")
    except redis.RedisError:
        reason = None  # Redis still away: the reason is only in the log
    said = reason.decode() if reason else "see its backfill_failed log line"
    print(
        f"qrw: backfill {name} failed: {said}; fix it, then `qrw backfill resume {name}`",
        file=sys.stderr,
    )
    return 1


@_backfill
def _cmd_backfill_start(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import Filters, Options, SourceSpec, runner
    from worker.backfill.state import check_name
    from worker.queue import runtime

    check_name(args.name)
    manifest = args.manifest
    if manifest is not None and "://" not in manifest:
        # Stored in Redis for `resume`, which may run in another folder.
        manifest = os.path.abspath(os.path.expanduser(manifest))
    spec = SourceSpec(prefixes=tuple(args.source or ()), manifest=manifest)
    filters = Filters(
        include=tuple(args.include),
        modified_after=args.modified_after,
        max_bytes=args.max_bytes,
        limit=args.limit,
        shard=args.shard,
    )
    options = Options(
        batch=args.batch,
        max_in_flight=args.max_in_flight,
        rate=args.rate,
        queue=args.queue,
        want=None if args.want is None else str(args.want),
        deadline_ms=args.deadline_ms,
    )
    if args.dry_run:
        counted = runner.dry_run(settings, spec, filters, options, args.out)
        print(json.dumps(counted.to_json(), indent=2))
        return 0
    connection = runtime.connect(settings.redis_url)
    runner.start(connection, settings, args.name, spec, filters, options, args.out)
    return _driving(settings, args.name)


@_backfill
def _cmd_backfill_status(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import state
    from worker.queue import runtime

    connection = runtime.connect(settings.redis_url)
    run_names = [args.name] if args.name else state.run_names(connection)
    runs = [state.load(connection, name).to_dict() for name in run_names]
    if args.json:
        print(json.dumps(runs[0] if args.name else {"backfills": runs}, indent=2))
        return 0
    print_table(
        ("run", "state", "listed", "enqueued", "in flight", "written", "failed", "driver"),
        [
            (
                run["name"],
                run["state"] + ("" if run["finished"] or run["state"] != "cancelled" else "*"),
                str(run["listed"]),
                str(run["enqueued"]),
                str(run["in_flight"]),
                str(run["objects_ok"] + run["objects_failed"]),
                str(run["objects_failed"]),
                run["driver"] or ("gone" if run["driver_gone_since"] else "-"),
            )
            for run in runs
        ],
    )
    for run in runs:
        if run["error"]:
            print(f"{run['name']}: {run['error']}")
        if run["hint"]:
            print(f"{run['name']}: {run['hint']}")
    return 0


@_backfill
def _cmd_backfill_pause(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import state
    from worker.queue import runtime

    state.request(runtime.connect(settings.redis_url), args.name, state.RunState.PAUSED)
    print(f"backfill {args.name}: paused (running jobs finish and are collected)")
    return 0


@_backfill
def _cmd_backfill_resume(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import state
    from worker.queue import runtime

    connection = runtime.connect(settings.redis_url)
    run = state.load(connection, args.name)
    if run.finished or run.state != state.RunState.CANCELLED:
        # A cancel still collecting is only finished; anything else must be resumable.
        state.request(connection, args.name, state.RunState.RUNNING)
    if state.driver_alive(connection, args.name):
        print(f"backfill {args.name}: resumed; driven by {run.driver}")
        return 0
    return _driving(settings, args.name)


@_backfill
def _cmd_backfill_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import runner, state
    from worker.queue import runtime

    connection = runtime.connect(settings.redis_url)
    removed = runner.cancel(connection, args.name)
    print(f"backfill {args.name}: cancelled; {removed} queued job(s) removed")
    if state.driver_alive(connection, args.name):
        return 0  # the driver collects the running jobs and writes the summary
    return _driving(settings, args.name)


@_backfill
def _cmd_backfill_retry(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import runner
    from worker.queue import runtime

    connection = runtime.connect(settings.redis_url)
    name = runner.retry(connection, settings, args.name, args.errors)
    print(f"backfill {name}: started over the objects of {args.name} with {', '.join(args.errors)}")
    return _driving(settings, name)


@_backfill
def _cmd_backfill_report(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import output, report, state
    from worker.queue import runtime

    run = state.load(runtime.connect(settings.redis_url), args.name)
    out = output.open_output(run.spec.out, settings)
    summary = out.read_summary() if run.finished else None
    if summary is None:  # still running: the numbers so far
        summary = report.build(out.iter_lines(below=run.counts["parts"]), run.to_dict())
    print(json.dumps(summary, indent=2) if args.json else report.render(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # what is still buffered: a reader gone shows here
    except BrokenPipeError:
        # The reader left early (`qrw status --json | head`). As Python's docs advise (the
        # signal module's note on SIGPIPE): stdout goes to devnull, so the interpreter's last
        # flush cannot fail again, and the status is that of a program cut off by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _CUT_OFF_BY_SIGPIPE
    return status


# 128 + SIGPIPE, what shells report for `seq` or `cat` cut off the same way.
_CUT_OFF_BY_SIGPIPE = 141


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark owns its arguments
        from worker.bench.accuracy import main as bench

        return bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if getattr(args, "needs_engine", False):
            _check_models(settings)
    except (SettingsError, ConfigurationError) as exc:
        # A configuration that cannot work is a usage error: one line, status 2, before any
        # process starts (a pool whose every process dies on it would only respawn forever).
        print(f"qrw: error: {exc}", file=sys.stderr)
        return 2
    return int(args.handler(args, settings))


class ConfigurationError(Exception):
    """The deployment cannot run the engine (missing weights, PyTorch not installed)."""


def _check_models(settings: Settings) -> None:
    from worker.engine.detector.detector import model_dir
    from worker.engine.detector.sessions import ModelUnavailable, check_models

    try:
        check_models(settings.backend, settings.detector_models, model_dir(settings))
    except ModelUnavailable as exc:
        raise ConfigurationError(str(exc)) from exc


def iter_inputs(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            yield path


def _cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    from worker.engine import Engine  # keeps `qrw --help` instant

    engine = Engine(settings)
    failed = False
    rows: list[tuple[str, str, str, str, str, str]] = []
    for path in iter_inputs(args.paths):
        result = engine.scan(path, deadline_ms=args.deadline_ms, want=args.want)
        failed |= not result.ok
        if args.json:
            print(
                json.dumps({"source": str(path), **result.to_dict()}, ensure_ascii=False),
                flush=True,
            )
            continue
        if result.error:
            rows.append((str(path), "error", result.error.code, "", "", result.error.message))
        elif not result.codes:
            rows.append((str(path), "none", "", f"{result.timings_ms['total']:.1f}", "", ""))
        for code in result.codes:
            payload = code.payload
            rows.append(
                (
                    str(path),
                    code.stage,
                    f"p{code.page + 1}",
                    f"{result.timings_ms['total']:.1f}",
                    scheme(payload.to_dict() if payload is not None else None),
                    _shown(code),
                ),
            )
    if not args.json:
        print_table(("source", "read by", "page", "ms", "scheme", "text / error"), rows)
    return 1 if failed else 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker import logs
    from worker.queue import supervisor

    logs.configure(settings)
    queues = worker_queues(args.queues) or settings.queues
    try:
        return supervisor.run(settings, queues, args.workers or settings.workers, burst=args.burst)
    except supervisor.MetricsPortTaken as exc:
        print(f"qrw: error: {exc}", file=sys.stderr)
        return 2


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from worker import logs
    from worker.http import server

    logs.configure(settings)
    return server.serve(settings, args.host, args.port)


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from worker.queue import status

    report = status.collect(settings)
    print(json.dumps(report, indent=2) if args.json else status.render(report))
    return 0 if report["redis"] == "ok" else 1


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from worker import demo

    return demo.run(settings, args.samples, args.count, args.workers)


def _cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    import time
    import uuid

    from worker.queue import producer, runtime

    connection = runtime.connect(settings.redis_url)
    reply_to = f"{names.REPLY_PREFIX}{uuid.uuid4()}" if args.wait else None
    options = {
        key: value
        for key, value in (
            ("want", args.want),
            ("deadline_ms", args.deadline_ms),
            ("reply_to", reply_to),
        )
        if value is not None
    }
    payloads = (
        [{"images": list(args.refs), **options}]
        if args.batch
        else [{"image": ref, **options} for ref in args.refs]
    )
    queue = args.queue or settings.queues[0]
    if reply_to is not None and not _served(connection, queue):
        print(
            f"qrw: warning: no worker serves queue {queue!r} now (none is registered on it); "
            "the jobs are queued and wait for one",
            file=sys.stderr,
        )
    job_ids = [producer.enqueue(connection, payload, queue=queue) for payload in payloads]
    if reply_to is None:
        for job_id in job_ids:
            print(job_id)
        return 0
    results: list[dict[str, object]] = []
    until = time.monotonic() + args.wait
    while len(results) < len(job_ids) and (left := until - time.monotonic()) > 0:
        reply = producer.wait_for_reply(connection, reply_to, timeout=max(0.01, left))
        if reply is not None:
            results.append(reply)
    if args.json:
        for result in results:
            print(json.dumps(result, ensure_ascii=False), flush=True)
    else:
        print_job_results(results)
    missing = len(job_ids) - len(results)
    if missing:
        print(f"{missing} job(s) gave no result within {args.wait:g} s", file=sys.stderr)
    return 0 if not missing and all(r.get("ok") for r in results) else 1


def _served(connection: redis.Redis, queue: str) -> bool:
    """Whether a live worker is registered on the queue (RQ's set of them, whose members
    outlive a worker killed without its teardown, so each one's own key must still exist)."""
    workers = connection.smembers(names.rq_queue_workers_key(queue))
    return any(connection.exists(key) for key in workers)


def _shown(code: Code) -> str:
    """A one-line preview: binary payloads by size, control characters escaped."""
    if code.content_type == "Binary":
        return f"<binary, {len(code.data)} bytes>"
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in code.text)
    return text if len(text) <= 60 else text[:57] + "..."


if __name__ == "__main__":
    sys.exit(main())
