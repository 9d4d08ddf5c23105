"""Spain: VeriFactu "QR tributario" (`es.verifactu`, digest §1) and TicketBAI
(`es.ticketbai`, digest §2)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from worker.schemes import Check, Payload
from worker.schemes import checks as c

VERIFACTU = "es.verifactu"
TICKETBAI = "es.ticketbai"

VERIFACTU_HOSTS = {
    "www2.agenciatributaria.gob.es": "production",
    "prewww2.aeat.es": "test",
}
_VERIFACTU_PATHS = ("/wlpl/tike-cont/validarqr", "/wlpl/tike-cont/validarqrnoverifactu")

# Host -> (path prefix in lower case, territory, environment).
TICKETBAI_HOSTS = {
    "batuz.eus": ("/qrtbai", "bizkaia", "production"),
    "tbai.egoitza.gipuzkoa.eus": ("/qr", "gipuzkoa", "production"),
    "tbai.prep.gipuzkoa.eus": ("/qr", "gipuzkoa", "test"),
    "ticketbai.araba.eus": ("/tbai/qrtbai", "araba", "production"),
    "pruebas-ticketbai.araba.eus": ("/tbai/qrtbai", "araba", "test"),
}
_IMPORTE = re.compile(r"[+-]?\d{1,12}(?:\.\d{1,2})?")
_TBAI_ID = re.compile(r"TBAI-([A-Z0-9]{9})-(\d{6})-(.{13})-(\d{3})")


def verifactu(host: str, path: str, query: str) -> Payload | None:
    if path.rstrip("/").lower() not in _VERIFACTU_PATHS:
        return None
    params = c.query_pairs(query)
    if "nif" not in params and "numserie" not in params:
        return None  # another page on the same host
    fields = {"environment": VERIFACTU_HOSTS[host]}
    fields["system"] = "verifactu" if path.rstrip("/").lower().endswith("qr") else "no_verifactu"
    checks: list[Check] = []
    missing = [k for k in ("nif", "numserie", "fecha", "importe") if not params.get(k)]
    problems = [f"missing {k}" for k in missing]
    nif = params.get("nif", "")
    if nif:
        fields["issuer_tax_id"] = nif
        checks.append(c.tax_id("es.nif", "issuer_tax_id", nif))
    number = params.get("numserie", "")
    if number:
        fields["invoice_number"] = number
        if len(number) > 60:
            problems.append(f"numserie has {len(number)} characters, at most 60")
    if params.get("fecha"):
        iso, check = c.date(params["fecha"], ("DD-MM-YYYY",))
        if iso:
            fields["issue_date"] = iso
        checks.append(check)
    if params.get("importe"):
        value = params["importe"]
        if _IMPORTE.fullmatch(value):
            fields["total"] = value
            checks.append(c.ok("total"))
        else:
            checks.append(c.failed("total", f"{value!r} is not ±12 digits with 2 decimals"))
    if params.get("idioma"):
        fields["language"] = params["idioma"]
    return Payload(VERIFACTU, fields, (c.structure("structure", problems), *checks))


def tbai_id_check(tbai_id: str) -> Check:
    """CRC-8 of the first 36 characters of a TicketBAI identifier, as 3 decimal digits."""
    expected = c.crc8(tbai_id[:36].encode("utf-8"))
    if tbai_id[36:] != f"{expected:03d}":
        return c.failed("tbai_id_crc8", f"CRC {tbai_id[36:]!r}, computed {expected:03d}")
    return c.ok("tbai_id_crc8")


def tbai_url_check(text: str) -> Check:
    """CRC-8 of the URL up to `&cr=`, as printed (percent-encoded). How the spec wants the
    URL encoded is unverified, so the decoded form is accepted too."""
    cut = text.rfind("&cr=")
    if cut < 0:
        return c.failed("tbai_url_crc8", "no cr parameter")
    given = text[cut + 4 :].split("&", 1)[0].split("#", 1)[0].strip()
    printed = c.crc8(text[:cut].encode("utf-8"))
    if given == f"{printed:03d}":
        return c.ok("tbai_url_crc8")
    if "%" in text[:cut]:
        decoded = c.crc8(unquote(text[:cut]).encode("utf-8"))
        if given == f"{decoded:03d}":
            return c.ok("tbai_url_crc8", "matches the percent-decoded URL")
    return c.failed("tbai_url_crc8", f"cr={given!r}, computed {printed:03d}")


def ticketbai(text: str, host: str, path: str, query: str) -> Payload | None:
    prefix, territory, environment = TICKETBAI_HOSTS[host]
    if not path.lower().startswith(prefix):
        return None
    params = c.query_pairs(query.replace("&amp;", "&"))
    tbai_id = params.get("id", "")
    if not tbai_id.startswith("TBAI-"):
        return None  # another page on the same host
    fields = {"territory": territory, "environment": environment, "tbai_id": tbai_id}
    checks: list[Check] = []
    problems = [f"missing {k}" for k in ("nf", "i", "cr") if k not in params]
    match = _TBAI_ID.fullmatch(tbai_id)
    if match is None:
        problems.append("the identifier is not TBAI-NIF-DDMMYY-13 characters-CRC")
    else:
        nif, ddmmyy, signature, _ = match.groups()
        fields["issuer_tax_id"] = nif
        fields["signature"] = signature
        checks.append(c.tax_id("es.nif", "issuer_tax_id", nif))
        iso, check = c.date(ddmmyy, ("DDMMYY",))
        if iso:
            fields["issue_date"] = iso
        checks.append(check)
        checks.append(tbai_id_check(tbai_id))
    if params.get("s"):
        fields["invoice_series"] = params["s"]
    if params.get("nf"):
        fields["invoice_number"] = params["nf"]
    if "i" in params:
        value, check = c.amount(params["i"], max_dec=2, signed=True)
        if value is not None:
            fields["total"] = value
        checks.append(check)
    if "cr" in params:
        checks.append(tbai_url_check(text))
    return Payload(TICKETBAI, fields, (c.structure("structure", problems), *checks))
