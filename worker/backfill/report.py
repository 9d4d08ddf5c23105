"""The numbers of a backfill run, computed in one pass over its output lines.

`build(lines, state)` is what `summary.json` holds and `qrw backfill report` prints. Memory
stays flat whatever the run's size: counters, and for the per-image timings a logarithmic
histogram (1 % wide buckets: a percentile is within 0.5 % of the exact value, from a few
hundred buckets whatever the number of images), not the values themselves.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from worker.backfill import BAD_LINE, DUPLICATE

# Each bucket spans a factor of 1.01; its midpoint (geometric) is within 0.5 % of any value in it.
_STEP = math.log(1.01)

# The state fields (worker.backfill.state.Run.to_dict) copied into the report as they are,
# when the state has them: what was read, and what never became an output line.
STATE_FIELDS = (
    "name",
    "state",
    "source",
    "out",
    "queue",
    "batch",
    "started_at",
    "finished_at",
    "error",
    "listed",
    "skipped",
    "skipped_by",
    "bad_lines",
    "bad_line_list",
    "cancelled",
)


def skipped_objects(skipped_by: dict[str, int]) -> dict[str, int]:
    """A run's skipped_by without its bad lines: the objects skipped by reason, which add
    up to its `skipped`; the bad lines are reported apart (`bad_lines`, `bad_line_list`)."""
    return {reason: n for reason, n in skipped_by.items() if reason != BAD_LINE}


class Histogram:
    """Percentiles of positive numbers in bounded memory, with bounded relative error."""

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.zeros = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            return
        self.count += 1
        self.sum += value
        self.min, self.max = min(self.min, value), max(self.max, value)
        if value == 0:
            self.zeros += 1
        else:
            self.buckets[math.floor(math.log(value) / _STEP)] += 1

    def percentile(self, p: float) -> float | None:
        """The nearest-rank p-th percentile (0 < p <= 100), or None without values."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                middle = math.exp((index + 0.5) * _STEP)
                return min(self.max, max(self.min, middle))
        return self.max

    def summary(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0, "p50": None, "p95": None, "mean": None, "max": None}
        return {
            "count": self.count,
            "p50": _round(self.percentile(50)),
            "p95": _round(self.percentile(95)),
            "mean": _round(self.sum / self.count),
            "max": _round(self.max),
        }


def build(lines: Iterable[dict[str, Any]], state: dict[str, Any]) -> dict[str, Any]:
    """The report of a run from its output lines (streamed) and its state.

    `state` is the run's state as a dict (worker.backfill.state.Run.to_dict); STATE_FIELDS are
    copied when present. images/s is measured between started_at and finished_at (ISO 8601
    or Unix seconds), or up to the last line's finished_at while the run has not finished.
    """
    tally = Tally()
    for line in lines:
        tally.add(line)
    return tally.report(state)


class Tally:
    """`build` one line at a time, for a pass over the parts that also writes the index."""

    def __init__(self) -> None:
        self.objects = self.read = self.no_code = self.failed = self.codes = 0
        self.size_bytes = self.size_unknown = 0
        self.failed_by_code: Counter[str] = Counter()
        self.codes_by_stage: Counter[str] = Counter()
        self.codes_by_scheme: Counter[str] = Counter()
        self.failed_checks: Counter[str] = Counter()
        self.totals, self.fetches = Histogram(), Histogram()
        self.first_finished: datetime | None = None
        self.last_finished: datetime | None = None

    def add(self, line: dict[str, Any]) -> None:
        self.objects += 1
        found = line.get("codes") or []
        if line.get("ok"):
            if found:
                self.read += 1
            else:
                self.no_code += 1
        else:
            self.failed += 1
            error = line.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            self.failed_by_code[str(code or "unknown")] += 1
        self.codes += len(found)
        for item in found:
            stage = item.get("stage") if isinstance(item, dict) else None
            self.codes_by_stage[str(stage or "unknown")] += 1
            self._payload(item.get("payload") if isinstance(item, dict) else None)
        size = line.get("size")
        if isinstance(size, int) and size >= 0:
            self.size_bytes += size
        else:
            self.size_unknown += 1
        timings = line.get("timings_ms") or {}
        for histogram, name in ((self.totals, "total"), (self.fetches, "fetch")):
            value = timings.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                histogram.add(float(value))
        finished = _time(line.get("finished_at"))
        if finished is not None:
            self.first_finished = min(self.first_finished or finished, finished)
            self.last_finished = max(self.last_finished or finished, finished)

    def _payload(self, payload: Any) -> None:
        """A code's payload: its scheme ("none" without one) and the checks that failed,
        by check name (`iban`, `issuer_tax_id`, `tbai_crc8`...)."""
        if not isinstance(payload, dict):
            self.codes_by_scheme["none"] += 1
            return
        self.codes_by_scheme[str(payload.get("scheme") or "unknown")] += 1
        for check in payload.get("checks") or []:
            if isinstance(check, dict) and check.get("outcome") == "failed":
                self.failed_checks[str(check.get("name") or "unknown")] += 1

    def report(self, state: dict[str, Any]) -> dict[str, Any]:
        started = _time(state.get("started_at")) or self.first_finished
        ended = _time(state.get("finished_at")) or self.last_finished
        elapsed = (ended - started).total_seconds() if started and ended else None
        objects = self.objects
        report: dict[str, Any] = {name: state[name] for name in STATE_FIELDS if name in state}
        skipped_by = state.get("skipped_by")
        if isinstance(skipped_by, dict):
            report["skipped_by"] = skipped_objects(skipped_by)
        report.update(
            {
                "duplicates": (skipped_by or {}).get(DUPLICATE, 0)
                if isinstance(skipped_by, dict)
                else 0,
                "objects": objects,
                "read": self.read,
                "no_code": self.no_code,
                "failed": self.failed,
                "failed_by_code": dict(self.failed_by_code.most_common()),
                "codes": self.codes,
                "codes_by_stage": dict(self.codes_by_stage.most_common()),
                "codes_by_scheme": dict(self.codes_by_scheme.most_common()),
                "failed_checks_by_kind": dict(self.failed_checks.most_common()),
                "bytes": self.size_bytes,
                "objects_without_size": self.size_unknown,
                "elapsed_s": _round(elapsed) if elapsed is not None else None,
                "images_per_s": _round(objects / elapsed) if elapsed and elapsed > 0 else None,
                "timings_ms": {"total": self.totals.summary(), "fetch": self.fetches.summary()},
                "percentiles": "nearest rank over a log histogram with 1% buckets (within 0.5%)",
            }
        )
        return report


def render(report: dict[str, Any]) -> str:
    """The report as a few lines of text, for `qrw backfill report`."""
    objects = report.get("objects", 0)

    def share(n: int) -> str:
        return f"{n} ({100 * n / objects:.1f}%)" if objects else str(n)

    total = report.get("timings_ms", {}).get("total", {})
    lines = [
        f"run        {report.get('name', '?')} ({report.get('state', '?')})",
        f"objects    {objects}  ({report.get('bytes', 0)} bytes)",
        f"read       {share(report.get('read', 0))}",
        f"no code    {share(report.get('no_code', 0))}",
        f"failed     {share(report.get('failed', 0))}",
    ]
    lines += [f"  {code:<24}{n}" for code, n in report.get("failed_by_code", {}).items()]
    for name, label in (
        ("skipped", "skipped by the filters"),
        ("duplicates", "named again by the manifest: one line each, counted under skipped"),
        ("bad_lines", "manifest lines that are not references"),
        ("cancelled", "taken off the queue by cancel: no line"),
    ):
        if report.get(name):
            lines.append(f"{name:<11}{report[name]}  ({label})")
    lines.append(f"codes      {report.get('codes', 0)}")
    lines += [f"  {stage:<24}{n}" for stage, n in report.get("codes_by_stage", {}).items()]
    by_scheme = report.get("codes_by_scheme", {})
    if any(scheme != "none" for scheme in by_scheme):
        lines.append("by scheme")
        lines += [f"  {scheme:<24}{n}" for scheme, n in by_scheme.items()]
    failed_checks = report.get("failed_checks_by_kind", {})
    if failed_checks:
        lines.append("failed checks (the codes stand; their payloads say what is wrong)")
        lines += [f"  {name:<24}{n}" for name, n in failed_checks.items()]
    rate = report.get("images_per_s")
    lines.append(f"images/s   {rate if rate is not None else '-'}")
    lines.append(
        f"per image  p50 {_ms(total.get('p50'))}  p95 {_ms(total.get('p95'))}  (timings_ms.total)"
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _time(value: Any) -> datetime | None:
    """An instant from ISO 8601 text or Unix seconds (a number or its text); None otherwise."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (ValueError, OverflowError, OSError):  # NaN, infinity, far out of range
            return None
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
