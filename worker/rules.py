"""The rules of a scan request, one module for every edge that takes one.

The queue payload (`worker.queue.payloads`), the HTTP shim's query parameters and the
command line all validate `want`, `deadline_ms`, `request_id` and `meta` here, so a
request means the same thing whichever way it arrives. Each rule raises `RuleViolation`
with a one-line message; the edge maps it to its own error code (`invalid_payload` for a
job, `invalid_request` for the shim, exit 2 for the CLI).
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any


class RuleViolation(ValueError):
    """A request field breaks its rule; the message says which and why, in one line."""


class Want(StrEnum):
    ALL = "all"
    FIRST = "first"


MIN_DEADLINE_MS = 1
MAX_DEADLINE_MS = 600_000
# A job's hard limit, whether the job names it (`timeout`) or QRW_JOB_TIMEOUT does: one
# range, so a default that a job could not itself ask for is refused at start.
MIN_JOB_TIMEOUT_S = 1
MAX_JOB_TIMEOUT_S = 3_600
# How long a result stays in Redis: QRW_RESULT_TTL's range and a payload's `result_ttl`
# share this maximum, so a job can never ask for more than the setting could be given.
MAX_RESULT_TTL_S = 30 * 86_400
MAX_REQUEST_ID_CHARS = 200
MAX_META_BYTES = 16_384
# How much of an offending value a message quotes: errors are published and logged, and a
# 20 MB field must not become a 20 MB error.
QUOTE_CHARS = 80

# ASCII digits only: str.isdigit() also admits "²" and full-width digits, which int() then
# rejects or silently accepts.
_DECIMAL = re.compile(r"[0-9]{1,7}")


def quote(value: object) -> str:
    """`repr(value)`, cut to QUOTE_CHARS characters for messages."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def want(value: object) -> Want:
    if isinstance(value, str):
        try:
            return Want(value)
        except ValueError:
            pass
    raise RuleViolation(f"'want' must be 'all' or 'first', not {quote(value)}")


def deadline_ms(value: object) -> int:
    """A deadline given as JSON: a whole number of milliseconds, 1 to 600000."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleViolation(
            f"'deadline_ms' must be a whole number from {MIN_DEADLINE_MS} to {MAX_DEADLINE_MS}, "
            f"not {quote(value)}"
        )
    if not MIN_DEADLINE_MS <= value <= MAX_DEADLINE_MS:
        raise RuleViolation(
            f"'deadline_ms' must be from {MIN_DEADLINE_MS} to {MAX_DEADLINE_MS}, not {value}"
        )
    return value


def deadline_ms_text(raw: str) -> int:
    """A deadline given as text (a query parameter, a command-line option)."""
    if not _DECIMAL.fullmatch(raw):
        raise RuleViolation(
            f"'deadline_ms' must be ASCII digits, a whole number from {MIN_DEADLINE_MS} to "
            f"{MAX_DEADLINE_MS}, not {quote(raw)}"
        )
    return deadline_ms(int(raw))


def text_ok(value: str) -> bool:
    """True when `value` can be written as UTF-8: no lone surrogates (valid JSON can carry
    them, as \\ud800, and they break every encoder downstream)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def request_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_REQUEST_ID_CHARS or not text_ok(value):
        raise RuleViolation(
            f"'request_id' must be valid Unicode text of at most {MAX_REQUEST_ID_CHARS} "
            f"characters, not {quote(value)}"
        )
    return value


def meta(value: Any) -> Any:
    """Any JSON value that serialises to at most MAX_META_BYTES bytes of UTF-8."""
    if value is None:
        return None
    try:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise RuleViolation("'meta' must be JSON without lone surrogates") from exc
    if size > MAX_META_BYTES:
        raise RuleViolation(f"'meta' must serialise to at most {MAX_META_BYTES} bytes, not {size}")
    return value
