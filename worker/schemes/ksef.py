"""Poland: KSeF verification codes (`pl.ksef`, digest §10).

KOD I   {host}/invoice/{seller NIP}/{DD-MM-YYYY}/{hash}
KOD II  {host}/certificate/{ctxType}/{ctxValue}/{seller NIP}/{cert serial}/{hash}/{signature}

The July-2025 layout `https://ksef-test.mf.gov.pl/client-app/invoice/…` is accepted too.
A bare KSeF number (`NIP-YYYYMMDD-HEX12-CRC2`, printed as the caption) is recognised with
its CRC-8 checked; that it is ever encoded alone in a QR is not established by the digest.
"""

from __future__ import annotations

import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c

SCHEME = "pl.ksef"
HOSTS = {
    "qr.ksef.mf.gov.pl": "production",
    "qr-demo.ksef.mf.gov.pl": "demo",
    "qr-test.ksef.mf.gov.pl": "test",
    "ksef.mf.gov.pl": "production",
    "ksef-demo.mf.gov.pl": "demo",
    "ksef-test.mf.gov.pl": "test",
}
CONTEXT_TYPES = frozenset({"Nip", "InternalId", "NipVatUe", "PeppolId"})
_HASH = re.compile(r"[A-Za-z0-9_-]{43}")
_NUMBER = re.compile(r"(\d{10})-(\d{8})-([0-9A-F]{12})-([0-9A-F]{2})")


def url(host: str, path: str) -> Payload | None:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["client-app"]:
        parts = parts[1:]
    if not parts or parts[0] not in ("invoice", "certificate"):
        return None
    fields = {"environment": HOSTS[host], "code": "I" if parts[0] == "invoice" else "II"}
    checks: list[Check] = []
    problems: list[str] = []
    if parts[0] == "invoice":
        if len(parts) != 4:
            problems.append(f"{len(parts) - 1} path segments, KOD I has 3")
        nip, date, digest = ([*parts[1:], "", "", ""])[:3]
    else:
        if len(parts) != 7:
            problems.append(f"{len(parts) - 1} path segments, KOD II has 6")
        ctx_type, ctx_value, nip, serial, digest, signature = (parts[1:] + [""] * 6)[:6]
        fields.update(context_type=ctx_type, context_value=ctx_value, certificate_serial=serial)
        if ctx_type not in CONTEXT_TYPES:
            problems.append(f"context type {ctx_type!r} is not one of {sorted(CONTEXT_TYPES)}")
        if ctx_type == "Nip" and ctx_value:
            checks.append(c.tax_id("pl.nip", "context_value", ctx_value))
        if signature:
            fields["signature"] = signature
            checks.append(c.unchecked("signature", "needs the signing certificate"))
        date = ""
    if nip:
        fields["issuer_tax_id"] = nip
        checks.append(c.tax_id("pl.nip", "issuer_tax_id", nip))
    if date:
        iso, check = c.date(date, ("DD-MM-YYYY",))
        if iso:
            fields["issue_date"] = iso
        checks.append(check)
    if digest:
        fields["hash"] = digest
        if not _HASH.fullmatch(digest):
            problems.append("the hash is not 43 Base64URL characters")
    return Payload(SCHEME, fields, (c.structure("structure", problems), *checks))


def number_check(number: str) -> Check:
    """CRC-8 (poly 0x07) of the first 32 characters, upper-case hex in the last two."""
    expected = f"{c.crc8(number[:32].encode('ascii')):02X}"
    if number[33:35] != expected:
        return c.failed("ksef_crc8", f"CRC {number[33:35]!r}, computed {expected}")
    return c.ok("ksef_crc8")


def is_number_candidate(text: str) -> bool:
    return len(text) == 35 and text[10:11] == "-" and text[19:20] == "-"


def number(text: str) -> Payload | None:
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    nip, date, _, _ = match.groups()
    fields = {"code": "number", "ksef_number": text, "issuer_tax_id": nip}
    iso, date_check = c.date(date, ("YYYYMMDD",))
    if iso:
        fields["issue_date"] = iso
    checks = (number_check(text), c.tax_id("pl.nip", "issuer_tax_id", nip), date_check)
    return Payload(SCHEME, fields, checks)
