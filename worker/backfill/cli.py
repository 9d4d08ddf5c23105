"""`qrw backfill`: its command tree (start, status, pause, resume, cancel, retry, report),
registered by worker/cli.py beside the other commands. What a run does is worker.backfill's
(docs/backfill.md); this module only parses, reports and sets the exit status: 0 when a run
is done or cancelled, 1 when it failed, 2 for a refusal (one line), 130 when interrupted."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from worker import arguments, rules
from worker.backfill import Options
from worker.console import print_table
from worker.errors import ErrorCode
from worker.queue import names
from worker.queue.payloads import MAX_BATCH
from worker.settings import Settings

_images_per_s = arguments.above_zero(1_000_000, "--rate must be images per second, 0 < R")


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
    known = {code.value for code in ErrorCode}
    codes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [code for code in codes if code not in known]
    if not codes or unknown:
        raise argparse.ArgumentTypeError(
            f"--errors must be error codes separated by commas ({', '.join(sorted(known))}), "
            f"got {rules.quote(text)}"
        )
    return codes


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`qrw backfill` and its actions, added to `qrw`'s commands."""
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
        "--max-bytes", type=arguments.whole(0, 2**63 - 1, "--max-bytes"), default=None, metavar="N"
    )
    start.add_argument(
        "--limit", type=arguments.whole(1, 2**63 - 1, "--limit"), default=None, metavar="N"
    )
    start.add_argument("--shard", type=_shard, default=None, metavar="I/N")
    start.add_argument("--dry-run", action="store_true", help="list and count; enqueue nothing")
    start.add_argument(
        "--batch",
        type=arguments.whole(1, MAX_BATCH, "--batch"),
        default=defaults.batch,
        metavar="K",
        help=f"images per job (default {defaults.batch})",
    )
    start.add_argument(
        "--max-in-flight",
        type=arguments.whole(1, 100_000, "--max-in-flight"),
        default=defaults.max_in_flight,
        metavar="N",
        help=f"jobs in Redis at once (default {defaults.max_in_flight})",
    )
    start.add_argument("--rate", type=_images_per_s, default=None, metavar="IMAGES_PER_S")
    start.add_argument(
        "--queue", type=arguments.one_queue, default=defaults.queue, help="default: qr-backfill"
    )
    start.add_argument("--want", type=arguments.want, default=None, metavar="first|all")
    start.add_argument("--deadline-ms", type=arguments.deadline_ms, default=None, metavar="N")
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
        from worker.queue import runtime

        logs.configure(settings)
        try:
            return command(args, settings)
        except BackfillError as exc:
            print(f"qrw: error: {exc}", file=sys.stderr)
            return 2
        except redis.ConnectionError as exc:
            print(
                f"qrw: error: Redis at {runtime.describe(settings)} is unreachable: {exc}",
                file=sys.stderr,
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
    connection = runtime.connect(settings)
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
    connection = runtime.connect(settings)
    runner.start(connection, settings, args.name, spec, filters, options, args.out)
    return _driving(settings, args.name)


@_backfill
def _cmd_backfill_status(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import state
    from worker.queue import runtime

    connection = runtime.connect(settings)
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

    state.request(runtime.connect(settings), args.name, state.RunState.PAUSED)
    print(f"backfill {args.name}: paused (running jobs finish and are collected)")
    return 0


@_backfill
def _cmd_backfill_resume(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import state
    from worker.queue import runtime

    connection = runtime.connect(settings)
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

    connection = runtime.connect(settings)
    removed = runner.cancel(connection, args.name)
    print(f"backfill {args.name}: cancelled; {removed} queued job(s) removed")
    if state.driver_alive(connection, args.name):
        return 0  # the driver collects the running jobs and writes the summary
    return _driving(settings, args.name)


@_backfill
def _cmd_backfill_retry(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import runner
    from worker.queue import runtime

    connection = runtime.connect(settings)
    name = runner.retry(connection, settings, args.name, args.errors)
    print(f"backfill {name}: started over the objects of {args.name} with {', '.join(args.errors)}")
    return _driving(settings, name)


@_backfill
def _cmd_backfill_report(args: argparse.Namespace, settings: Settings) -> int:
    from worker.backfill import output, report, state
    from worker.queue import runtime

    run = state.load(runtime.connect(settings), args.name)
    out = output.open_output(run.spec.out, settings)
    summary = out.read_summary() if run.finished else None
    if summary is None:  # still running: the numbers so far
        summary = report.build(out.iter_lines(below=run.counts["parts"]), run.to_dict())
    print(json.dumps(summary, indent=2) if args.json else report.render(summary))
    return 0
