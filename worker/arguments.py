"""The argument types of the `qrw` command line, shared by its two command trees (worker/cli.py
and worker/backfill/cli.py): each refuses what the queue payload, the shim and the settings
refuse, with their message, so `qrw` never accepts what a worker would turn down."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from worker import rules
from worker.settings import SettingsError, parse_one


def whole(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An argparse type: ASCII digits only, low..high."""
    lead = f"{what} " if what else ""

    def parse(text: str) -> int:
        if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"{lead}must be a whole number {low}..{high}, got {rules.quote(text)}"
            )
        return int(text)

    return parse


def above_zero(high: int, meaning: str) -> Callable[[str], float]:
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


def rule(check: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type from a worker.rules rule: the CLI refuses exactly what the queue
    payload and the shim refuse, with the same message."""

    def parse(text: str) -> object:
        try:
            return check(text)
        except rules.RuleViolation as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def setting(name: str) -> Callable[[str], object]:
    """An argparse type for an option that overrides a setting: the setting's own range."""

    def parse(text: str) -> object:
        try:
            value = parse_one(name, text)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value[0] if isinstance(value, tuple) and len(value) == 1 else value

    return parse


def queue_list(text: str) -> tuple[str, ...]:
    """`--queues`: each argument may itself be a comma-separated list, as QRW_QUEUES is."""
    try:
        return tuple(parse_one("queues", text))
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def one_queue(text: str) -> str:
    names = queue_list(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"name one queue, not a list: {text!r}")
    return names[0]


want = rule(rules.want)
deadline_ms = rule(rules.deadline_ms_text)
