"""The `qrw` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from worker.settings import Settings, SettingsError

if TYPE_CHECKING:
    from worker.engine import Code

# Walking a folder picks images by extension, so ground-truth sidecars and notes that
# live beside them are not reported as unsupported inputs. Files named explicitly are
# always scanned, whatever their name.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pdf"}
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qrw", description="qr-worker: read the QR codes on invoice images."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = commands.add_parser("scan", help="scan image files or folders and print what they hold")
    scan.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    scan.add_argument("--json", action="store_true", help="one JSON object per input per line")
    scan.add_argument("--want", choices=("first", "all"), default=None)
    scan.add_argument("--deadline-ms", type=_positive_int, default=None, metavar="N")
    scan.set_defaults(needs_engine=True, handler=_cmd_scan)

    work = commands.add_parser("worker", help="run queue workers (RQ) until SIGTERM")
    work.add_argument("--queues", nargs="+", default=None, help="default: QRW_QUEUES")
    work.add_argument("--workers", type=_positive_int, default=None, help="default: QRW_WORKERS")
    work.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    work.set_defaults(needs_engine=True, handler=_cmd_worker)

    enq = commands.add_parser("enqueue", help="enqueue scan jobs for image references")
    enq.add_argument("refs", nargs="+", metavar="IMAGE_REF", help="s3://bucket/key or file:///path")
    enq.add_argument("--queue", default=None, help="default: the first of QRW_QUEUES")
    enq.add_argument("--batch", action="store_true", help="one job for all references")
    enq.add_argument("--want", choices=("first", "all"), default=None)
    enq.add_argument("--deadline-ms", type=_positive_int, default=None, metavar="N")
    enq.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait for the results (on a reply list, no polling) and print them",
    )
    enq.add_argument("--json", action="store_true", help="with --wait: print results as JSONL")
    enq.set_defaults(handler=_cmd_enqueue)

    demo = commands.add_parser("demo", help="Redis, workers and sample invoices, end to end")
    demo.add_argument("--samples", type=Path, default=Path("build/samples"))
    demo.add_argument("--count", type=_positive_int, default=12)
    demo.add_argument("--workers", type=_positive_int, default=2)
    demo.set_defaults(needs_engine=True, handler=_cmd_demo)

    serve = commands.add_parser("serve", help="run the HTTP shim (POST /detect) until SIGTERM")
    serve.add_argument("--host", default=None, help="default: QRW_HTTP_HOST")
    serve.add_argument("--port", type=int, default=None, help="default: QRW_HTTP_PORT")
    serve.set_defaults(needs_engine=True, handler=_cmd_serve)

    status = commands.add_parser("status", help="queues, workers, failures and throughput")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(handler=_cmd_status)

    commands.add_parser("bench", help="accuracy, speed and memory against the peers (--help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark owns its arguments
        from worker.bench.accuracy import main as bench

        return bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from worker.engine.detector.detector import model_dir
    from worker.engine.detector.sessions import ModelUnavailable, check_models

    try:
        settings = Settings.from_env()
        # A worker pool whose every process dies loading a missing model would only
        # respawn forever; say what is wrong once, before anything starts.
        if getattr(args, "needs_engine", False):
            check_models(settings.backend, settings.detector_models, model_dir(settings))
    except (SettingsError, ModelUnavailable) as exc:
        parser.error(str(exc))
    return int(args.handler(args, settings))


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
    rows: list[tuple[str, str, str, str, str]] = []
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
            rows.append((str(path), "error", result.error.code, "", result.error.message))
        elif not result.codes:
            rows.append((str(path), "none", "", f"{result.timings_ms['total']:.1f}", ""))
        for code in result.codes:
            rows.append(
                (
                    str(path),
                    code.stage,
                    f"p{code.page + 1}",
                    f"{result.timings_ms['total']:.1f}",
                    _shown(code),
                ),
            )
    if not args.json:
        _print_table(("source", "read by", "page", "ms", "text / error"), rows)
    return 1 if failed else 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker import logs
    from worker.queue import supervisor

    logs.configure(settings)
    queues = tuple(args.queues or settings.queues)
    return supervisor.run(settings, queues, args.workers or settings.workers, burst=args.burst)


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
    reply_to = f"qrw:reply:{uuid.uuid4()}" if args.wait else None
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


def print_job_results(results: list[dict[str, object]]) -> None:
    """Job results as a table: one row per image, with its outcome and timing breakdown."""
    rows: list[tuple[str, ...]] = []
    for result in results:
        for item in result.get("items") or [result]:  # type: ignore[union-attr]
            timings = item.get("timings_ms") or {}  # type: ignore[union-attr]
            waited = (result.get("timings_ms") or {}).get("queue_wait")  # type: ignore[union-attr]
            error = item.get("error")  # type: ignore[union-attr]
            codes = item.get("codes") or []  # type: ignore[union-attr]
            rows.append(
                (
                    str(item.get("image", "")).rsplit("/", 1)[-1],  # type: ignore[union-attr]
                    error["code"] if error else f"{len(codes)} code(s)",
                    ",".join(sorted({c["stage"] for c in codes})) or "-",
                    _ms(waited),
                    _ms(timings.get("fetch")),
                    _ms(timings.get("decode_image")),
                    _ms(timings.get("fast")),
                    _ms(timings.get("detect_small")),
                    _ms(timings.get("detect_medium")),
                    _ms(timings.get("thorough")),
                    _ms((result.get("timings_ms") or {}).get("total")),  # type: ignore[union-attr]
                )
            )
    header = (
        "image",
        "outcome",
        "stages",
        "queue ms",
        "fetch",
        "decode",
        "fast",
        "detect_small",
        "detect_medium",
        "thorough",
        "job total",
    )
    _print_table(header, rows)


def _ms(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def _shown(code: Code) -> str:
    """A one-line preview: binary payloads by size, control characters escaped."""
    if code.content_type == "Binary":
        return f"<binary, {len(code.data)} bytes>"
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in code.text)
    return text if len(text) <= 60 else text[:57] + "..."


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


if __name__ == "__main__":
    sys.exit(main())
