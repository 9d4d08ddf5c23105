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
    scan.set_defaults(handler=_cmd_scan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
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
