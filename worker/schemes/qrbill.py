"""Switzerland: the QR-bill (`ch.qrbill`, Swiss Implementation Guidelines 2.x; digest §12).

31 mandatory lines (up to 34): SPC, version, coding, IBAN, creditor (7 lines), ultimate
creditor (7, empty), amount, currency, ultimate debtor (7), reference type, reference,
message, EPD, then bill information and up to two alternative schemes.
"""

from __future__ import annotations

import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c
from worker.schemes.epc import lines_of

SCHEME = "ch.qrbill"
_VERSION = re.compile(r"02\d\d")
_AMOUNT = re.compile(r"\d{1,9}\.\d{2}")
_COUNTRY = re.compile(r"[A-Z]{2}")


def is_candidate(text: str) -> bool:
    return text.startswith("SPC") and text[3:4] in ("\n", "\r")


def _address(
    role: str, lines: list[str], required: bool, structure: list[str], limits: list[str]
) -> dict[str, str]:
    kind, name, line1, line2, postcode, town, country = lines
    if not any(lines):
        if required:
            structure.append(f"the {role} address is missing")
        return {}
    fields = {f"{role}_name": name, f"{role}_country": country}
    if kind == "S":
        fields.update({f"{role}_street": line1, f"{role}_postcode": postcode, f"{role}_town": town})
        if line2:
            fields[f"{role}_building"] = line2
        for label, value, most in (
            ("name", name, 70),
            ("street", line1, 70),
            ("building number", line2, 16),
            ("postcode", postcode, 16),
            ("town", town, 35),
        ):
            if len(value) > most:
                limits.append(f"{role} {label} has {len(value)} characters, at most {most}")
        structure += [
            f"the {role} {label} is missing"
            for label, value in (("name", name), ("postcode", postcode), ("town", town))
            if not value
        ]
    elif kind == "K":
        # Combined addresses are no longer allowed from IG 2.3 (Nov 2025) but still circulate.
        fields.update({f"{role}_address_line1": line1, f"{role}_address_line2": line2})
        for label, value in (("name", name), ("address line 1", line1), ("address line 2", line2)):
            if len(value) > 70:
                limits.append(f"{role} {label} has {len(value)} characters, at most 70")
        if not name or not line2:
            structure.append(f"the {role} name or address line 2 is missing")
        if postcode or town:
            structure.append(f"a combined {role} address has postcode and town lines empty")
    else:
        structure.append(f"{role} address type {kind!r} is neither S nor K")
    if not _COUNTRY.fullmatch(country):
        structure.append(f"{role} country {country!r} is not an ISO code")
    return fields


def parse(text: str) -> Payload:
    trailing = text.endswith("\n")
    lines = lines_of(text)
    structure: list[str] = []
    limits: list[str] = []
    checks: list[Check] = []
    if not 31 <= len(lines) <= 34:
        structure.append(f"{len(lines)} lines, a QR-bill has 31 to 34")
    lines += [""] * (34 - len(lines))
    version, coding, iban = lines[1], lines[2], lines[3]
    fields: dict[str, str] = {"version": version}
    if not _VERSION.fullmatch(version):
        structure.append(f"version {version!r} is not 02xx")
    if coding != "1":
        structure.append(f"coding type {coding!r} is not 1")
    fields["iban"] = iban
    iban_check = c.iban(iban)
    if iban_check.outcome == "ok" and iban[:2] not in ("CH", "LI"):
        iban_check = c.failed("iban", "a QR-bill IBAN is Swiss or Liechtenstein")
    checks.append(iban_check)
    fields.update(_address("creditor", lines[4:11], True, structure, limits))
    if any(lines[11:18]):
        structure.append("the ultimate creditor lines must be empty")
    amount, currency = lines[18], lines[19]
    if amount:
        if _AMOUNT.fullmatch(amount) and float(amount) >= 0.01:
            fields["total"] = amount
            checks.append(c.ok("total"))
        else:
            checks.append(c.failed("total", f"{amount!r} is not 0.01-999999999.99 with 2 decimals"))
    fields["currency"] = currency
    if currency not in ("CHF", "EUR"):
        structure.append(f"currency {currency!r} is neither CHF nor EUR")
    fields.update(_address("debtor", lines[20:27], False, structure, limits))
    ref_type, reference, message, trailer = lines[27:31]
    fields["reference_type"] = ref_type
    if reference:
        fields["reference"] = reference
    qr_iban = iban[:2] in ("CH", "LI") and iban[4:9].isdigit() and 30000 <= int(iban[4:9]) <= 31999
    if ref_type == "QRR":
        checks.append(c.qr_reference(reference))
        if not qr_iban:
            structure.append("reference type QRR needs a QR-IBAN")
    elif ref_type == "SCOR":
        checks.append(c.rf_reference(reference))
    elif ref_type == "NON":
        if reference:
            structure.append("reference type NON with a reference")
    else:
        structure.append(f"reference type {ref_type!r} is not QRR, SCOR or NON")
    if qr_iban and ref_type != "QRR":
        structure.append("a QR-IBAN needs reference type QRR")
    if message:
        fields["message"] = message
    if trailer != "EPD":
        structure.append(f"trailer {trailer!r} is not EPD")
    bill_info, alternatives = lines[31], [x for x in lines[32:34] if x]
    if bill_info:
        fields["bill_information"] = bill_info
        if not bill_info.startswith("//"):
            structure.append("bill information does not start with //")
    combined = len(message) + len(bill_info)
    if combined > 140:
        limits.append(f"message and bill information have {combined} characters, at most 140")
    for i, alt in enumerate(alternatives, 1):
        fields[f"alternative_scheme_{i}"] = alt
        if len(alt) > 100:
            limits.append(f"alternative scheme {i} has {len(alt)} characters, at most 100")
    detail = "a trailing line break (illegal, tolerated)" if trailing and not structure else None
    structure_check = (
        c.structure("structure", structure) if structure else c.ok("structure", detail)
    )
    result = [structure_check, c.structure("limits", limits), *checks]
    if len(text) > 997:
        result.append(
            c.unchecked("size", f"{len(text)} characters, over the commonly cited 997 (unverified)")
        )
    return Payload(SCHEME, fields, tuple(result))
