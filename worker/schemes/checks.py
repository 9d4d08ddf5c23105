"""Checks shared by the schemes, each returning a `Check` (never raising).

Identifier check digits come from python-stdnum, IBANs from schwifty; the CRC-8 of
TicketBAI and KSeF, dates, amounts and query splitting are written here because no
library covers them as these formats use them (docs/payloads.md lists which is which).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from stdnum import iso11649
from stdnum.ar import cuit
from stdnum.br import cnpj, cpf
from stdnum.ch import esr
from stdnum.co import nit
from stdnum.es import nif as es_nif
from stdnum.exceptions import ValidationError
from stdnum.mx import rfc
from stdnum.pe import ruc
from stdnum.pl import nip
from stdnum.pt import nif as pt_nif

from worker.schemes import Check, Outcome


def ok(name: str, detail: str | None = None) -> Check:
    return Check(name, Outcome.OK, detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, Outcome.FAILED, detail)


def unchecked(name: str, detail: str) -> Check:
    return Check(name, Outcome.NOT_CHECKABLE, detail)


RECOGNISED_ONLY = "recognised only: the format is not verified in our reference"


def recognised_only() -> Check:
    """The structure check of a recognise-only scheme: the digest could not verify enough of
    its format to check more than its header."""
    return unchecked("structure", RECOGNISED_ONLY)


def structure(name: str, problems: list[str]) -> Check:
    """One check summing up a list of structural problems (ok when there are none)."""
    return failed(name, "; ".join(problems)) if problems else ok(name)


# --- identifiers (python-stdnum, schwifty) -------------------------------------------------


def _stdnum(validate: Callable[[str], Any], label: str) -> Callable[[str, str], Check]:
    def check(name: str, value: str) -> Check:
        try:
            validate(value)
        except ValidationError as exc:
            return failed(name, f"not a valid {label}: {exc.message}")
        return ok(name)

    return check


def _rfc(value: str) -> Any:
    return rfc.validate(value, validate_check_digits=True)


def _nit(value: str) -> Any:
    # DIAN QR texts carry the NIT without its verification digit, so only its shape
    # can be checked; a NIT written with the DV (`900123456-7`) is checked in full.
    if "-" in value:
        return nit.validate(value)
    if not (value.isdigit() and 5 <= len(value) <= 15):
        raise ValidationError("a NIT has 5 to 15 digits")
    return value


def _cnpj_or_cpf(value: str) -> Any:
    # The NFC-e access key holds a CNPJ, or a CPF zero-padded to 14 digits.
    try:
        return cnpj.validate(value)
    except ValidationError:
        if value.startswith("000") and cpf.is_valid(value[3:]):
            return value
        raise


_TAX_IDS: dict[str, Callable[[str, str], Check]] = {
    "es.nif": _stdnum(es_nif.validate, "Spanish NIF/NIE/CIF"),
    "mx.rfc": _stdnum(_rfc, "Mexican RFC"),
    "ar.cuit": _stdnum(cuit.validate, "Argentinian CUIT"),
    "pe.ruc": _stdnum(ruc.validate, "Peruvian RUC"),
    "co.nit": _stdnum(_nit, "Colombian NIT"),
    "br.cnpj": _stdnum(_cnpj_or_cpf, "Brazilian CNPJ (or zero-padded CPF)"),
    "pl.nip": _stdnum(nip.validate, "Polish NIP"),
    "pt.nif": _stdnum(pt_nif.validate, "Portuguese NIF"),
}

# Generic RFCs SAT prescribes for the public and foreigners: valid although their last
# character does not follow the check-digit rule (digest §15).
_GENERIC_RFCS = frozenset({"XAXX010101000", "XEXX010101000"})


def tax_id(kind: str, name: str, value: str) -> Check:
    """The check digits of a tax id of `kind` (a key of `_TAX_IDS`)."""
    if kind == "mx.rfc":
        if value.upper() in _GENERIC_RFCS:
            return ok(name, "generic RFC")
        check = _TAX_IDS[kind](name, value)
        if check.outcome is Outcome.FAILED:
            # About 1.5% of the RFCs SAT has issued fail the rule: a warning, not proof.
            return failed(name, f"{check.detail} (about 1.5% of issued RFCs fail this rule)")
        return check
    return _TAX_IDS[kind](name, value)


def iban(value: str, name: str = "iban") -> Check:
    try:
        IBAN(value)
    except SchwiftyException as exc:
        return failed(name, f"not a valid IBAN: {exc}")
    return ok(name)


def bic(value: str, name: str = "bic") -> Check:
    try:
        BIC(value)
    except SchwiftyException as exc:
        return failed(name, f"not a valid BIC: {exc}")
    return ok(name)


def rf_reference(value: str, name: str = "reference") -> Check:
    """ISO 11649 creditor reference (`RF` + 2 check digits + up to 21 characters)."""
    try:
        iso11649.validate(value)
    except ValidationError as exc:
        return failed(name, f"not a valid ISO 11649 reference: {exc.message}")
    return ok(name)


def qr_reference(value: str, name: str = "reference") -> Check:
    """Swiss QR reference: 27 digits, not all zeros, recursive mod-10 check digit."""
    if value.strip("0") == "":
        return failed(name, "a QR reference must not be all zeros")
    try:
        esr.validate(value)
    except ValidationError as exc:
        return failed(name, f"not a valid QR reference: {exc.message}")
    if len(value.replace(" ", "")) != 27:
        return failed(name, "a QR reference has 27 digits")
    return ok(name)


# --- CRC-8 (hand-written: TicketBAI, KSeF) --------------------------------------------------


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8, polynomial 0x07, init 0, no reflection, xorout 0 (CRC-8/SMBUS)."""
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


# --- dates and amounts (hand-written) -------------------------------------------------------

_DATE_FORMATS = {
    "YYYY-MM-DD": re.compile(r"(\d{4})-(\d{2})-(\d{2})"),
    "DD-MM-YYYY": re.compile(r"(\d{2})-(\d{2})-(\d{4})"),
    "DD/MM/YYYY": re.compile(r"(\d{2})/(\d{2})/(\d{4})"),
    "DD.MM.YYYY": re.compile(r"(\d{2})\.(\d{2})\.(\d{4})"),
    "YYYYMMDD": re.compile(r"(\d{4})(\d{2})(\d{2})"),
    "DDMMYY": re.compile(r"(\d{2})(\d{2})(\d{2})"),
}


def date(
    value: str, formats: tuple[str, ...], name: str = "issue_date"
) -> tuple[str | None, Check]:
    """The ISO 8601 form of `value` written in one of `formats`, and its check."""
    for fmt in formats:
        match = _DATE_FORMATS[fmt].fullmatch(value)
        if match is None:
            continue
        a, b, c = (int(g) for g in match.groups())
        year, month, day = (a, b, c) if fmt.startswith("YYYY") else (c, b, a)
        if fmt == "DDMMYY":
            year += 2000
        try:
            return dt.date(year, month, day).isoformat(), ok(name)
        except ValueError:
            return None, failed(name, f"{value!r} is no calendar date")
    return None, failed(name, f"{value!r} is not a date written as {' or '.join(formats)}")


_DECIMAL = re.compile(r"[+-]?\d+(?:\.\d+)?")


def amount(
    value: str,
    name: str = "total",
    *,
    max_int: int | None = None,
    max_dec: int | None = None,
    signed: bool = False,
) -> tuple[str | None, Check]:
    """`value` as a decimal string when it is one within the scheme's limits, and its check."""
    if not _DECIMAL.fullmatch(value):
        return None, failed(name, f"{value!r} is not a decimal amount")
    digits = value.lstrip("+-")
    if not signed and value[0] in "+-":
        return value, failed(name, f"{value!r} carries a sign")
    integer, _, decimals = digits.partition(".")
    if max_int is not None and len(integer) > max_int:
        return value, failed(name, f"{value!r} has more than {max_int} integer digits")
    if max_dec is not None and len(decimals) > max_dec:
        return value, failed(name, f"{value!r} has more than {max_dec} decimals")
    return value, ok(name)


# --- URLs -----------------------------------------------------------------------------------


def split_url(text: str) -> tuple[str, str, str] | None:
    """(host in lower case, path, query) of an http(s) URL, or None; the query is returned
    as printed (no decoding) so schemes can split it their own way."""
    lowered = text[:8].lower()
    if lowered.startswith("https://"):
        rest = text[8:]
    elif lowered.startswith("http://"):
        rest = text[7:]
    else:
        return None
    path_start = len(rest)
    for sep in "/?#":
        idx = rest.find(sep)
        if 0 <= idx < path_start:
            path_start = idx
    host = rest[:path_start].lower()
    rest = rest[path_start:]
    path, _, query = rest.partition("?")
    query = query.partition("#")[0]
    return host, path, query


def query_pairs(query: str, splitter: re.Pattern[str] | None = None) -> dict[str, str]:
    """Query parameters, keys lower-cased, values percent-decoded without turning `+`
    into a space (`parse_qs` would, and corrupt Base64 and signatures). Empty pairs are
    skipped; the first occurrence of a key wins."""
    pairs: dict[str, str] = {}
    parts = splitter.split(query) if splitter is not None else query.split("&")
    for part in parts:
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if sep and key and key not in pairs:
            pairs[key] = unquote(value) if "%" in value else value
    return pairs
