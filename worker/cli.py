"""The `qrw` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from worker import arguments
from worker.console import IMAGE_SUFFIXES, print_job_results, print_table, scheme
from worker.queue import names
from worker.settings import Settings, SettingsError, parse_one

if TYPE_CHECKING:
    import redis

    from worker.engine import Code


_sample_count = arguments.whole(1, 1000)
_wait_seconds = arguments.above_zero(86_400, "must be seconds, 0 < S")


def worker_queues(groups: Sequence[tuple[str, ...]] | None) -> tuple[str, ...] | None:
    """The queues `--queues` names, in order, by the same rule as QRW_QUEUES (no repeats)."""
    if not groups:
        return None
    try:
        return tuple(parse_one("queues", ",".join(name for group in groups for name in group)))
    except SettingsError as exc:
        print(f"qrw: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qrw", description="qr-worker: read the QR codes on invoice images."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = commands.add_parser("scan", help="scan image files or folders and print what they hold")
    scan.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    scan.add_argument("--json", action="store_true", help="one JSON object per input per line")
    scan.add_argument("--want", type=arguments.want, default=None, metavar="first|all")
    scan.add_argument("--deadline-ms", type=arguments.deadline_ms, default=None, metavar="N")
    scan.set_defaults(needs_engine=True, handler=_cmd_scan)

    work = commands.add_parser("worker", help="run queue workers (RQ) until SIGTERM")
    work.add_argument(
        "--queues", nargs="+", type=arguments.queue_list, default=None, help="default: QRW_QUEUES"
    )
    work.add_argument(
        "--workers", type=arguments.setting("workers"), default=None, help="default: QRW_WORKERS"
    )
    work.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    work.set_defaults(needs_engine=True, handler=_cmd_worker)

    enq = commands.add_parser("enqueue", help="enqueue scan jobs for image references")
    enq.add_argument("refs", nargs="+", metavar="IMAGE_REF", help="s3://bucket/key or file:///path")
    enq.add_argument(
        "--queue", type=arguments.one_queue, default=None, help="default: the first of QRW_QUEUES"
    )
    enq.add_argument("--batch", action="store_true", help="one job for all references")
    enq.add_argument("--want", type=arguments.want, default=None, metavar="first|all")
    enq.add_argument("--deadline-ms", type=arguments.deadline_ms, default=None, metavar="N")
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
    demo.add_argument("--workers", type=arguments.setting("workers"), default=2)
    demo.set_defaults(needs_engine=True, handler=_cmd_demo)

    serve = commands.add_parser("serve", help="run the HTTP shim (POST /detect) until SIGTERM")
    serve.add_argument(
        "--host", type=arguments.setting("http_host"), default=None, help="default: QRW_HTTP_HOST"
    )
    serve.add_argument(
        "--port", type=arguments.setting("http_port"), default=None, help="default: QRW_HTTP_PORT"
    )
    serve.set_defaults(needs_engine=True, handler=_cmd_serve)

    status = commands.add_parser("status", help="queues, workers, failures and throughput")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(handler=_cmd_status)

    commands.add_parser("bench", help="accuracy, speed and memory against the peers (--help)")
    # Imported here, not at the top: `qrw bench` never builds this parser nor loads the backfill.
    from worker.backfill import cli as backfill_cli

    backfill_cli.add_commands(commands)
    return parser


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

    connection = runtime.connect(settings)
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
    job_ids = [
        producer.enqueue(
            connection,
            payload,
            queue=queue,
            replicas=settings.redis_wait_replicas,
            replicas_timeout_ms=settings.redis_wait_ms,
        )
        for payload in payloads
    ]
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
