"""What a code says: invoice and payment QR payloads, recognised, parsed and checked.

>>> from worker.schemes import parse
>>> payload = parse("https://www2.agenciatributaria.gob.es/wlpl/TIKE-CONT/ValidarQR?nif=...")
>>> payload.scheme, payload.fields["issuer_tax_id"], [c.outcome for c in payload.checks]

`parse(text, data)` runs on a code already decoded: pure Python, no I/O, never raises, and
returns None when the text is no known scheme. A payload that fails a check is still a
payload: the read stands, and the payload says what is wrong (docs/payloads.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    NOT_CHECKABLE = "not_checkable"  # nothing to check it against, or the rule is unverified


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a payload: `name` is stable and documented (e.g. `issuer_tax_id`,
    `iban`, `tbai_crc8`, `tlv`, `issue_date`, `total`), `detail` says why it failed or
    could not be checked."""

    name: str
    outcome: Outcome
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Payload:
    """A recognised payload: its scheme (`es.verifactu`, `epc.sct`, ...), its fields under
    the scheme's documented names (all text: amounts as decimal strings, dates as ISO 8601),
    the checks that apply with their outcomes, and any other problems found."""

    scheme: str
    fields: dict[str, str] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No check failed and no problem was found."""
        return not self.problems and all(c.outcome != Outcome.FAILED for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "ok": self.ok,
            "fields": dict(self.fields),
            "checks": [check.to_dict() for check in self.checks],
            "problems": list(self.problems),
        }


def parse(text: str | None, data: bytes | None = None) -> Payload | None:
    """The payload of a decoded code (its text, and its raw bytes when the text is not the
    whole story), or None when it is no known scheme. Never raises."""
    try:
        from worker.schemes.registry import recognise

        return recognise(text, data)
    except Exception as exc:  # a parser bug must never cost the read
        return Payload("unknown", problems=(f"internal parser error: {type(exc).__name__}",))
