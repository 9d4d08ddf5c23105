"""Other payment codes (digest §13, §14): Czech SPAYD (`cz.spayd`), Russian GOST R
56042-2014 (`ru.gost56042`), and the recognise-only ones: Czech SID (`cz.sid`), Slovak
PAY by square (`sk.bysquare`), Slovenian UPN QR (`si.upn`), EMVCo merchant QR
(`emv.merchant`), Dominican e-CF (`do.ecf`), Paraguayan SIFEN (`py.sifen`).

Recognise-only schemes carry what their header says and a `not_checkable` structure
check: the digest could not verify enough of them to check more.
"""

from __future__ import annotations

import base64
import binascii
import lzma
import re
import struct
import zlib
from urllib.parse import unquote

from worker.schemes import Check, Payload
from worker.schemes import checks as c
from worker.schemes.epc import lines_of

RECOGNISED_ONLY = "recognised only: the format is not verified in our reference"

# --- Czech SPAYD ------------------------------------------------------------------------------

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


def sid(text: str) -> Payload:
    version = text.split("*", 2)[1] if text.count("*") >= 1 else ""
    return Payload("cz.sid", {"version": version}, (c.unchecked("structure", RECOGNISED_ONLY),))


# --- Russia: GOST R 56042-2014 ----------------------------------------------------------------

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


# --- Slovakia: PAY by square (recognise only) -------------------------------------------------

BYSQUARE = "sk.bysquare"
_BASE32HEX = re.compile(r"[0-9A-V]{16,}")
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA1, "lc": 3, "lp": 0, "pb": 2, "dict_size": 128 * 1024}]


def _base32hex(text: str) -> bytes | None:
    body = text + "=" * (-len(text) % 8)
    try:
        return base64.b32hexdecode(body)
    except binascii.Error:
        return None  # a length Base32 cannot have


def is_bysquare_candidate(text: str) -> bool:
    return _BASE32HEX.fullmatch(text) is not None


def bysquare(text: str) -> Payload | None:
    head = _base32hex(text[:8])
    if head is None or head[1] & 0x0F:
        return None  # the header's reserved nibble is zero
    raw = _base32hex(text)
    if raw is None or len(raw) < 5:
        return None
    bysquare_type, version, document_type = raw[0] >> 4, raw[0] & 0x0F, raw[1] >> 4
    (length,) = struct.unpack("<H", raw[2:4])
    if length < 4:
        return None  # too short for its CRC32
    try:
        body = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_LZMA_FILTERS).decompress(
            raw[4:], length
        )
    except lzma.LZMAError:
        return None
    if len(body) != length or length < 4:
        return None
    fields = {
        "type": str(bysquare_type),
        "version": str(version),
        "document_type": str(document_type),
    }
    checks: list[Check] = [c.unchecked("structure", RECOGNISED_ONLY)]
    if zlib.crc32(body[4:]) == struct.unpack("<I", body[:4])[0]:
        checks.append(c.ok("crc32"))
    else:
        checks.append(
            c.unchecked("crc32", "CRC32 does not match the rule as we understand it (unverified)")
        )
    return Payload(BYSQUARE, fields, tuple(checks))


# --- Slovenia: UPN QR (recognise only) --------------------------------------------------------


def is_upn_candidate(text: str) -> bool:
    return text.startswith("UPNQR") and text[5:6] in ("\n", "\r")


def upn(text: str, data: bytes | None) -> Payload:
    if data is not None:
        text = data.decode("iso-8859-2")  # UPN QR is ISO-8859-2 whatever the decoder guessed
    lines = lines_of(text)
    return Payload(
        "si.upn", {"lines": str(len(lines))}, (c.unchecked("structure", RECOGNISED_ONLY),)
    )


# --- EMVCo merchant QR (recognise only) -------------------------------------------------------

_EMV = re.compile(r"000201.*6304[0-9A-Fa-f]{4}", re.DOTALL)


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): binascii's CRC-CCITT with that init."""
    return binascii.crc_hqx(data, 0xFFFF)


def emv(text: str) -> Payload | None:
    text = text.rstrip("\r\n")
    if _EMV.fullmatch(text) is None:
        return None
    checks: list[Check] = [c.unchecked("structure", RECOGNISED_ONLY)]
    given = text[-4:].upper()
    if f"{_crc16(text[:-4].encode('utf-8')):04X}" == given:
        checks.append(c.ok("crc16"))
    else:
        checks.append(
            c.unchecked("crc16", "CRC-16 does not match the rule as we understand it (unverified)")
        )
    return Payload("emv.merchant", {}, tuple(checks))


# --- Dominican Republic e-CF and Paraguay SIFEN (recognise only) ------------------------------

ECF_HOSTS = frozenset({"ecf.dgii.gov.do", "fc.dgii.gov.do"})


def ecf(path: str, query: str) -> Payload | None:
    if "consultatimbre" not in path.lower():
        return None
    params = c.query_pairs(query)
    fields = {}
    rnc = params.get("rncemisor") or params.get("rnc")
    if rnc:
        fields["issuer_tax_id"] = rnc
    return Payload("do.ecf", fields, (c.unchecked("structure", RECOGNISED_ONLY),))


def sifen(query: str) -> Payload | None:
    params = c.query_pairs(query)
    if "nversion" not in params or "chashqr" not in params:
        return None
    fields = {"version": params["nversion"], "hash": params["chashqr"]}
    if params.get("id"):
        fields["cdc"] = params["id"]
    return Payload("py.sifen", fields, (c.unchecked("structure", RECOGNISED_ONLY),))
