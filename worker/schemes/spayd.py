"""Czech SPAYD (`cz.spayd`, digest §13): Short Payment Descriptor, `SPD*1.0*ACC:...`."""

from __future__ import annotations

import re
from urllib.parse import unquote

from worker.schemes import Check, Payload
from worker.schemes import checks as c

SPAYD = "cz.spayd"
_SPAYD_FIELDS = {
    "ACC": "account",
    "ALT-ACC": "alternative_accounts",
    "AM": "total",
    "CC": "currency",
    "RF": "reference",
    "RN": "creditor_name",
    "DT": "due_date",
    "PT": "payment_type",
    "MSG": "message",
    "NT": "notification_type",
    "NTA": "notification_address",
    "CRC32": "crc32",
    "X-VS": "variable_symbol",
    "X-SS": "specific_symbol",
    "X-KS": "constant_symbol",
}
_SPAYD_LIMITS = {"RN": 40, "MSG": 60, "PT": 3, "RF": 16}
_VERSION = re.compile(r"\d+\.\d+")


def spayd(text: str) -> Payload:
    parts = text.rstrip("\r\n").split("*")
    fields: dict[str, str] = {"version": parts[1] if len(parts) > 1 else ""}
    structure: list[str] = []
    limits: list[str] = []
    checks: list[Check] = []
    if not _VERSION.fullmatch(fields["version"]):
        structure.append(f"version {fields['version']!r} is not N.N")
    raw: dict[str, str] = {}
    for part in parts[2:]:
        key, sep, value = part.partition(":")
        if not sep:
            if part:
                structure.append(f"{part[:20]!r} has no KEY:value form")
            continue
        # Split first, then decode: `*` `+` `%` inside values are percent-escaped.
        raw.setdefault(key, unquote(value) if "%" in value else value)
    for key, value in raw.items():
        name = _SPAYD_FIELDS.get(key)
        if name:
            fields[name] = value
        if key in _SPAYD_LIMITS and len(value) > _SPAYD_LIMITS[key]:
            limits.append(f"{key} has {len(value)} characters, at most {_SPAYD_LIMITS[key]}")
    account = raw.get("ACC", "")
    if not account:
        structure.append("ACC is missing")
    else:
        iban, _, bic = account.partition("+")
        fields["iban"] = iban
        checks.append(c.iban(iban))
        if bic:
            fields["bic"] = bic
            checks.append(c.bic(bic))
    if "AM" in raw:
        _, check = c.amount(raw["AM"], max_int=10, max_dec=2)
        checks.append(check)
    if "CC" in raw and not re.fullmatch(r"[A-Z]{3}", raw["CC"]):
        structure.append(f"currency {raw['CC']!r} is not an ISO 4217 code")
    if "RF" in raw and not raw["RF"].isdigit():
        structure.append(f"RF {raw['RF']!r} is not digits")
    if "DT" in raw:
        iso, check = c.date(raw["DT"], ("YYYYMMDD",), "due_date")
        if iso:
            fields["due_date"] = iso
        checks.append(check)
    if "CRC32" in raw:
        checks.append(c.unchecked("crc32", "how SPAYD's CRC32 is computed is unverified"))
    return Payload(
        SPAYD, fields, (c.structure("structure", structure), c.structure("limits", limits), *checks)
    )
