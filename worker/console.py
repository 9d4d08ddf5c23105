"""What the command line shows and picks up, shared by `qrw` (worker.cli) and `qrw demo`
(worker.demo): plain-text tables, the job-result table, and which files count as images
when a folder is walked. Its own module so that the CLI and the demo both depend on it and
never on each other."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Walking a folder picks images by extension, so ground-truth sidecars and notes that
# live beside them are not reported as unsupported inputs. Files named explicitly are
# always scanned, whatever their name.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pdf"}
)

# The cascade's stages, in the order they run (worker.engine.stages.default_stages): each
# gets its own time column (tests/test_payload_results.py checks the engine's list against it).
STAGES = ("fast", "detect_small", "detect_medium", "thorough", "zoom")
JOB_RESULT_HEADER = (
    "image",
    "outcome",
    "stages",
    "schemes",
    "queue ms",
    "fetch",
    "decode",
    *STAGES,
    "job total",
)


def print_table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    """Left-aligned columns, two spaces apart, a dashed rule under the header."""
    rows = list(rows)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def print_job_results(results: Iterable[Mapping[str, Any]]) -> None:
    """Job results as a table: one row per image, with its outcome and timing breakdown."""
    rows: list[tuple[str, ...]] = []
    for result in results:
        job_timings = result.get("timings_ms") or {}
        for item in result.get("items") or [result]:
            timings = item.get("timings_ms") or {}
            error = item.get("error")
            codes = item.get("codes") or []
            rows.append(
                (
                    str(item.get("image", "")).rsplit("/", 1)[-1],
                    error["code"] if error else f"{len(codes)} code(s)",
                    ",".join(sorted({c["stage"] for c in codes})) or "-",
                    ",".join(sorted({scheme(c.get("payload")) for c in codes})) or "-",
                    ms(job_timings.get("queue_wait")),
                    ms(timings.get("fetch")),
                    ms(timings.get("decode_image")),
                    *(ms(timings.get(stage)) for stage in STAGES),
                    ms(job_timings.get("total")),
                )
            )
    print_table(JOB_RESULT_HEADER, rows)


def scheme(payload: Mapping[str, Any] | None) -> str:
    """A code's payload in a table cell: its scheme, with the checks that failed (the read
    stands whatever they say), or "-" for text that is no known scheme."""
    if not payload:
        return "-"
    name = str(payload.get("scheme", "?"))
    if payload.get("ok", True):
        return name
    failed = [
        str(check.get("name"))
        for check in payload.get("checks") or []
        if check.get("outcome") == "failed"
    ]
    if payload.get("problems"):
        failed.append("problems")
    return f"{name} (failed: {'+'.join(failed)})"


def ms(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"
