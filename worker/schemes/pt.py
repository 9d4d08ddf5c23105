"""Portugal: the AT invoice QR code (`pt.at`, Portaria 195/2020; digest §8).

A:<issuer NIF>*B:<buyer NIF>*C:<country>*D:<type>*E:<status>*F:<YYYYMMDD>*G:<doc id>*
H:<ATCUD>*I1:PT*I2..I8*J1..J8*K1..K8*L*M*N:<taxes>*O:<gross total>*P*Q:<hash>*R:<cert>*S
"""

from __future__ import annotations

import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c

SCHEME = "pt.at"
# The keys in their fixed order; a payload lists a subsequence of them.
ORDER = (
    ["A", "B", "C", "D", "E", "F", "G", "H", "I1"]
    + [f"I{i}" for i in range(2, 9)]
    + [f"J{i}" for i in range(1, 9)]
    + [f"K{i}" for i in range(1, 9)]
    + ["L", "M", "N", "O", "P", "Q", "R", "S"]
)
_RANK = {key: i for i, key in enumerate(ORDER)}
REQUIRED = ("A", "B", "C", "D", "E", "F", "G", "H", "I1", "N", "O", "Q")
AMOUNT_KEYS = frozenset(k for k in ORDER if k[0] in "IJK" and k[1:] != "1") | {
    "L",
    "M",
    "N",
    "O",
    "P",
}
_NAMED = {
    "A": "issuer_tax_id",
    "B": "buyer_tax_id",
    "C": "buyer_country",
    "D": "document_type",
    "E": "document_status",
    "G": "invoice_number",
    "H": "atcud",
    "N": "tax_amount",
    "O": "total",
    "P": "withholding_tax",
    "Q": "hash",
    "R": "software_certificate",
    "S": "other_info",
}
LIMITS = {"B": 30, "C": 12, "G": 60, "H": 70, "S": 65, "I1": 5, "J1": 5, "K1": 5}
_ATCUD = re.compile(r"[A-Za-z0-9]{8,}-\d+|0")
_SEPARATOR = re.compile(r"\s*\*\s*")


def is_candidate(text: str) -> bool:
    return text.startswith("A:") and "*B:" in text.replace(" ", "")[:60]


def parse(text: str) -> Payload | None:
    pairs: list[tuple[str, str]] = []
    for part in _SEPARATOR.split(text.strip()):
        key, sep, value = part.partition(":")
        if not sep:
            return None if len(pairs) < 2 else _broken(pairs, part)
        pairs.append((key.strip(), value))
    keys = [k for k, _ in pairs]
    if not {"A", "B"} <= set(keys) or not any(k in keys for k in ("D", "F", "G", "H")):
        return None
    return _payload(pairs)


def _broken(pairs: list[tuple[str, str]], part: str) -> Payload:
    payload = _payload(pairs)
    problem = f"field {part[:20]!r} has no KEY:value form"
    return Payload(SCHEME, payload.fields, payload.checks, (*payload.problems, problem))


def _payload(pairs: list[tuple[str, str]]) -> Payload:
    values = dict(pairs)
    fields: dict[str, str] = {}
    structure: list[str] = []
    limits: list[str] = []
    checks: list[Check] = []
    unknown = [k for k, _ in pairs if k not in _RANK]
    if unknown:
        structure.append(f"unknown keys {', '.join(unknown)}")
    ranks = [_RANK[k] for k, _ in pairs if k in _RANK]
    if ranks != sorted(set(ranks)):
        structure.append("keys out of order or repeated")
    structure += [f"missing {k}" for k in REQUIRED if k not in values]
    for key, value in pairs:
        name = _NAMED.get(key) or (key.lower() if key in _RANK and key not in ("F",) else None)
        if name and name not in fields:
            fields[name] = value
        if key in LIMITS and len(value) > LIMITS[key]:
            limits.append(f"{key} has {len(value)} characters, at most {LIMITS[key]}")
    if "D" in values and len(values["D"]) != 2:
        structure.append(f"document type {values['D']!r} is not 2 characters")
    if "E" in values and values["E"] not in ("N", "S", "A", "F", "R"):
        structure.append(f"document status {values['E']!r} is not N, S, A, F or R")
    if "H" in values and not _ATCUD.fullmatch(values["H"]):
        structure.append(f"ATCUD {values['H']!r} is not CODE-SEQUENCE or 0")
    if "Q" in values and not (len(values["Q"]) == 4 or values["Q"] == "0"):
        structure.append(f"hash {values['Q']!r} is not 4 characters or 0")
    if "A" in values:
        checks.append(c.tax_id("pt.nif", "issuer_tax_id", values["A"]))
    buyer = values.get("B", "")
    if buyer and (values.get("C") in ("PT", "Desconhecido") or buyer == "999999990"):
        checks.append(c.tax_id("pt.nif", "buyer_tax_id", buyer))
    if "F" in values:
        iso, check = c.date(values["F"], ("YYYYMMDD",))
        if iso:
            fields["issue_date"] = iso
        checks.append(check)
    bad = []
    for key, value in pairs:
        if key in AMOUNT_KEYS:
            name = {"N": "tax_amount", "O": "total"}.get(key)
            _, check = c.amount(value, name or key, max_int=13, max_dec=2)
            if name:
                checks.append(check)
            elif check.detail:
                bad.append(f"{key}: {check.detail}")
            if len(value) > 16:
                limits.append(f"{key} has {len(value)} characters, at most 16")
    checks.append(c.structure("amounts", bad))
    return Payload(
        SCHEME,
        fields,
        (c.structure("structure", structure), c.structure("limits", limits), *checks),
    )
