"""Russia: GOST R 56042-2014 (`ru.gost56042`, digest §13): `ST0001` and a character set digit,
then key=value pairs."""

from __future__ import annotations

from worker.schemes import Check, Payload
from worker.schemes import checks as c

GOST = "ru.gost56042"
GOST_CHARSETS = {"1": "windows-1251", "2": "utf-8", "3": "koi8-r"}
_GOST_REQUIRED = ("Name", "PersonalAcc", "BankName", "BIC", "CorrespAcc")
_GOST_FIELDS = {
    "Name": "creditor_name",
    "PersonalAcc": "account",
    "BankName": "bank_name",
    "BIC": "bic",
    "CorrespAcc": "correspondent_account",
    "Purpose": "message",
    "PayeeINN": "issuer_tax_id",
    "KPP": "kpp",
    "PayerINN": "buyer_tax_id",
    "DocNo": "invoice_number",
    "UIN": "uin",
    "PersAcc": "payer_account",
    "LastName": "payer_last_name",
    "FirstName": "payer_first_name",
    "MiddleName": "payer_middle_name",
    "PayerAddress": "payer_address",
    "CBC": "cbc",
    "OKTMO": "oktmo",
}
_GOST_LIMITS = {"Name": 160, "BankName": 45, "Purpose": 160, "PayeeINN": 12, "KPP": 9}


def is_gost_candidate(text: str) -> bool:
    return text.startswith("ST0001") and text[6:7] in ("1", "2", "3")


def gost(text: str, data: bytes | None) -> Payload:
    charset = text[6]
    encoding = GOST_CHARSETS[charset]
    structure: list[str] = []
    if data is not None and data.startswith(b"ST0001"):
        # The header names the character set; the decoder may have guessed another.
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            structure.append(f"bytes are not valid {encoding}")
            text = data.decode(encoding, "replace")
    separator = text[7:8]
    pairs = (
        [p.partition("=") for p in text[8:].rstrip("\r\n").split(separator)] if separator else []
    )
    keys = [k for k, sep, _ in pairs if sep]
    values = {k: v for k, sep, v in pairs if sep}
    fields: dict[str, str] = {"charset": charset}
    limits: list[str] = []
    checks: list[Check] = []
    if keys[:5] != list(_GOST_REQUIRED):
        structure.append("the mandatory block is not Name, PersonalAcc, BankName, BIC, CorrespAcc")
    structure += [f"{k} is missing" for k in _GOST_REQUIRED if k not in values]
    for key, name in _GOST_FIELDS.items():
        if key in values:
            fields[name] = values[key]
    for key, most in _GOST_LIMITS.items():
        if len(values.get(key, "")) > most:
            limits.append(f"{key} has {len(values[key])} characters, at most {most}")
    block = separator.join(f"{k}={values.get(k, '')}" for k in _GOST_REQUIRED)
    if len(text[:8].encode()) + len(block.encode(encoding, "replace")) > 300:
        limits.append("the mandatory block is over 300 bytes")
    for key in ("PersonalAcc", "CorrespAcc"):
        if key in values and not (values[key].isdigit() and len(values[key]) == 20):
            structure.append(f"{key} is not 20 digits")
    if "BIC" in values and not (values["BIC"].isdigit() and len(values["BIC"]) == 9):
        structure.append("BIC is not 9 digits")
    if "PersonalAcc" in values and "BIC" in values:
        checks.append(
            c.unchecked("account", "the account's control key against the BIC is unverified")
        )
    if "Sum" in values:
        kopecks = values["Sum"]
        if kopecks.isdigit() and len(kopecks) <= 18:
            fields["total"] = f"{int(kopecks) // 100}.{int(kopecks) % 100:02d}"
            fields["currency"] = "RUB"
            checks.append(c.ok("total"))
        else:
            checks.append(c.failed("total", f"Sum {kopecks!r} is not up to 18 digits of kopecks"))
    if "DocDate" in values:
        iso, check = c.date(values["DocDate"], ("DD.MM.YYYY",))
        if iso:
            fields["issue_date"] = iso
        checks.append(check)
    return Payload(
        GOST, fields, (c.structure("structure", structure), c.structure("limits", limits), *checks)
    )
