"""Saudi Arabia: the ZATCA e-invoice QR (`sa.zatca`, digest §9): Base64 of TLV records
(tag 1 byte, length 1 byte, value), tags 1-5 in phase 1 and 6-9 added in phase 2.

The standard says Base64; hex text and raw bytes are recognised too, with a failed
`encoding` check, so that such a code still shows what it carries.
"""

from __future__ import annotations

import base64
import binascii
import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c

SCHEME = "sa.zatca"
MAX_BASE64 = 700
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_VAT = re.compile(r"3\d{13}3")
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?"
)
_TEXT_TAGS = {1: "issuer_name", 2: "issuer_tax_id", 3: "timestamp", 4: "total", 5: "tax_amount"}
_BINARY_TAGS = {6: "hash", 7: "signature", 8: "public_key", 9: "certificate_signature"}


def is_text_candidate(text: str) -> bool:
    # 0x01 as the first byte: Base64 starts with `A` then Q-f, hex with `01`.
    return (text[:1] == "A" and "Q" <= text[1:2] <= "f") or text[:2] == "01"


def _records(raw: bytes) -> tuple[list[tuple[int, bytes]], str | None]:
    """TLV records up to the first fault, and the fault."""
    records = []
    i = 0
    while i < len(raw):
        if i + 2 > len(raw):
            return records, f"a record header is cut off at byte {i}"
        tag, length = raw[i], raw[i + 1]
        if i + 2 + length > len(raw):
            return records, f"tag {tag} declares {length} bytes, {len(raw) - i - 2} remain"
        records.append((tag, raw[i + 2 : i + 2 + length]))
        i += 2 + length
    return records, None


def _plausible(records: list[tuple[int, bytes]]) -> bool:
    """The first records are a seller name and a VAT number: what tells a ZATCA code from
    random Base64 or bytes starting with 0x01."""
    if len(records) < 2 or records[0][0] != 1 or records[1][0] != 2:
        return False
    try:
        records[0][1].decode("utf-8")
        return records[1][1].decode("ascii").isdigit()
    except UnicodeDecodeError:
        return False


def from_text(text: str) -> Payload | None:
    stripped = text.strip()
    if stripped[:2] == "01" and _HEX.fullmatch(stripped):
        return _parse(bytes.fromhex(stripped), "hex", None)
    if stripped[:1] == "A" and _BASE64.fullmatch(stripped):
        # Padding is not insisted on: a cut-off code should still show what it carries.
        body = stripped.rstrip("=")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except binascii.Error:
            return None
        return _parse(raw, "base64", len(stripped))
    return None


def from_bytes(data: bytes) -> Payload | None:
    return _parse(data, "raw", None) if data[:1] == b"\x01" else None


def _starts_like_zatca(raw: bytes) -> bool:
    # Cheap test before walking every record: tag 1, then tag 2 right after its value.
    return len(raw) > 2 and raw[0] == 1 and raw[2 + raw[1] : 3 + raw[1]] == b"\x02"


def _parse(raw: bytes, encoding: str, base64_length: int | None) -> Payload | None:
    if not _starts_like_zatca(raw):
        return None
    records, fault = _records(raw)
    if not _plausible(records):
        return None
    fields: dict[str, str] = {"encoding": encoding}
    checks: list[Check] = []
    if encoding != "base64":
        checks.append(c.failed("encoding", f"TLV written as {encoding}, the standard says Base64"))
    problems = [fault] if fault else []
    tags = [tag for tag, _ in records]
    if tags != sorted(set(tags)):
        problems.append(f"tags {tags} are not ascending and unique")
    problems += [f"tag {t} is missing" for t in range(1, 6) if t not in tags]
    problems += [f"tag {t} is unknown" for t in tags if not 1 <= t <= 9]
    for tag, value in records:
        if tag in _TEXT_TAGS:
            try:
                fields.setdefault(_TEXT_TAGS[tag], value.decode("utf-8"))
            except UnicodeDecodeError:
                problems.append(f"tag {tag} is not UTF-8 text")
        elif tag in _BINARY_TAGS:
            # Tags 6 and 7 are Base64 text in widespread implementations and raw bytes per
            # the standard: keep text as given, show bytes as Base64.
            try:
                text = value.decode("ascii")
                is_b64 = bool(_BASE64.fullmatch(text))
            except UnicodeDecodeError:
                is_b64 = False
            fields.setdefault(
                _BINARY_TAGS[tag], text if is_b64 else base64.b64encode(value).decode("ascii")
            )
    checks.insert(0, c.structure("tlv", problems))
    if base64_length is not None and base64_length > MAX_BASE64:
        checks.append(
            c.failed("limits", f"{base64_length} Base64 characters, at most {MAX_BASE64}")
        )
    vat = fields.get("issuer_tax_id")
    if vat is not None:
        if _VAT.fullmatch(vat):
            checks.append(c.ok("issuer_tax_id", "format only: no public check-digit rule"))
        else:
            checks.append(
                c.failed("issuer_tax_id", f"{vat!r} is not 15 digits starting and ending with 3")
            )
    stamp = fields.get("timestamp")
    if stamp is not None:
        match = _TIMESTAMP.fullmatch(stamp)
        iso, check = c.date(match.group(1), ("YYYY-MM-DD",)) if match else (None, None)
        if match is None or check is None:
            check = c.failed("issue_date", f"{stamp!r} is not an ISO 8601 timestamp")
        elif iso and not (
            int(match.group(2)) < 24 and int(match.group(3)) < 60 and int(match.group(4)) < 61
        ):
            iso, check = None, c.failed("issue_date", f"{stamp!r} has no valid time of day")
        if iso:
            fields["issue_date"] = iso
        checks.append(check)
    for name in ("total", "tax_amount"):
        if name in fields:
            _, check = c.amount(fields[name], name)
            checks.append(check)
    if "signature" in fields:
        checks.append(c.unchecked("signature", "needs the canonicalised invoice XML"))
    return Payload(SCHEME, fields, tuple(checks))
