"""EPC069-12 SEPA credit transfer QR ("GiroCode", `epc.sct`), digest §11.

    BCD / 001|002 / charset 1-8 / SCT / BIC / name / IBAN / EUR<amount> / purpose /
    RF reference / unstructured text / information

Lines are separated by LF or CR LF; trailing optional lines may be dropped.
"""

from __future__ import annotations

import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c

SCHEME = "epc.sct"

# Line 3: the character set the payload is written in.
CHARSETS = {
    "1": "utf-8",
    "2": "iso-8859-1",
    "3": "iso-8859-2",
    "4": "iso-8859-4",
    "5": "iso-8859-5",
    "6": "iso-8859-7",
    "7": "iso-8859-10",
    "8": "iso-8859-15",
}
MAX_BYTES = 331
_AMOUNT = re.compile(r"EUR(\d{1,9}(?:\.\d{1,2})?)")
_PURPOSE = re.compile(r"[A-Z0-9]{4}")


def is_candidate(text: str) -> bool:
    return text.startswith("BCD") and text[3:4] in ("\n", "\r")


def lines_of(text: str) -> list[str]:
    """Lines split on LF or CR LF, one trailing line break dropped (extra ones are data)."""
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def parse(text: str, data: bytes | None) -> Payload:
    lines = lines_of(text)
    problems: list[str] = []
    structure: list[str] = []
    limits: list[str] = []
    checks: list[Check] = []

    version = lines[1] if len(lines) > 1 else ""
    charset = lines[2] if len(lines) > 2 else ""
    if version not in ("001", "002"):
        structure.append(f"version {version!r} is neither 001 nor 002")
    encoding = CHARSETS.get(charset)
    if encoding is None:
        structure.append(f"character set {charset!r} is not 1-8")
    elif data is not None and encoding != "utf-8":
        # The decoder guessed a character set; the payload declares its own (digest §0).
        try:
            lines = lines_of(data.decode(encoding))
        except UnicodeDecodeError:
            structure.append(f"bytes are not valid {encoding}")
    elif data is not None:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            structure.append("declares UTF-8 but its bytes are not UTF-8")
    if len(lines) < 7:
        structure.append(f"{len(lines)} lines, at least 7 are required")
    if len(lines) > 12:
        structure.append(f"{len(lines)} lines, at most 12 are allowed")
    lines += [""] * (12 - len(lines))
    (_, _, _, ident, bic, name, iban, amount, purpose, reference, remittance, info) = lines[:12]

    fields: dict[str, str] = {"version": version, "charset": charset}
    if ident == "INST":
        checks.append(c.unchecked("identification", "INST is not verified in our reference"))
    elif ident != "SCT":
        structure.append(f"identification {ident!r} is not SCT")
    fields["identification"] = ident

    if bic:
        fields["bic"] = bic
        checks.append(c.bic(bic))
    elif version == "001":
        structure.append("version 001 requires a BIC")
    if not name:
        structure.append("the beneficiary name is missing")
    elif len(name) > 70:
        limits.append(f"beneficiary name has {len(name)} characters, at most 70")
    fields["creditor_name"] = name
    if not iban:
        structure.append("the IBAN is missing")
    else:
        fields["iban"] = iban
        if len(iban) > 34:
            limits.append(f"IBAN has {len(iban)} characters, at most 34")
        checks.append(c.iban(iban))

    if amount:
        match = _AMOUNT.fullmatch(amount)
        if match is None:
            checks.append(c.failed("total", f"{amount!r} is not EUR and 0.01-999999999.99"))
        else:
            value = match.group(1)
            fields["total"], fields["currency"] = value, "EUR"
            if float(value) < 0.01:
                checks.append(c.failed("total", f"{amount!r} is below EUR0.01"))
            else:
                checks.append(c.ok("total"))
    if purpose:
        fields["purpose"] = purpose
        if not _PURPOSE.fullmatch(purpose):
            limits.append(f"purpose {purpose!r} is not a 4-character code")
    if reference:
        fields["reference"] = reference
        if len(reference) > 35:
            limits.append(f"structured reference has {len(reference)} characters, at most 35")
        if reference[:2].upper() == "RF":
            checks.append(c.rf_reference(reference))
        else:
            checks.append(c.unchecked("reference", "not an ISO 11649 RF reference"))
    if remittance:
        fields["remittance_text"] = remittance
        if len(remittance) > 140:
            limits.append(f"remittance text has {len(remittance)} characters, at most 140")
    if reference and remittance:
        structure.append("both a structured reference and a remittance text")
    if info:
        fields["beneficiary_info"] = info
        if len(info) > 70:
            limits.append(f"beneficiary information has {len(info)} characters, at most 70")
    size = len(data) if data is not None else len(text.encode(encoding or "utf-8", "replace"))
    if size > MAX_BYTES:
        limits.append(f"{size} bytes, at most {MAX_BYTES}")

    return Payload(
        SCHEME,
        fields,
        (c.structure("structure", structure), c.structure("limits", limits), *checks),
        tuple(problems),
    )
