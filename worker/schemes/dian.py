"""Colombia: DIAN (`co.dian`, digest §6): the CUFE search URL and the key-value text block."""

from __future__ import annotations

import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c

DIAN = "co.dian"
DIAN_HOSTS = {"catalogo-vpfe.dian.gov.co": "production", "catalogo-vpfe-hab.dian.gov.co": "test"}
_DIAN_LINE = re.compile(r"\s*([A-Za-z]+)\s*[:=]\s*(.*?)\s*")
_DIAN_FIELDS = {
    "numfac": "invoice_number",
    "fecfac": "issue_date",
    "horfac": "issue_time",
    "nitfac": "issuer_tax_id",
    "docadq": "buyer_tax_id",
    "valfac": "subtotal",
    "valiva": "tax_amount",
    "valotroim": "other_taxes",
    "valtolfac": "total",
    "valtotal": "total",
    "valfacim": "total",
    "cufe": "cufe",
    "cude": "cufe",
    "qrcode": "url",
}
_CUFE = re.compile(r"[0-9a-fA-F]{96}")


def is_dian_block(text: str) -> bool:
    head = text[:40].lower()
    return "numfac" in head or "nitfac" in head or "cufe" in head


def _cufe_check(cufe: str) -> Check:
    if _CUFE.fullmatch(cufe):
        return c.ok("cufe", "format only: the CUFE hashes a secret technical key")
    return c.failed("cufe", f"{cufe[:20]!r}… is not 96 hexadecimal characters")


def dian_url(host: str, path: str, query: str) -> Payload | None:
    if not path.lower().startswith("/document/searchqr"):
        return None
    params = c.query_pairs(query)
    if "documentkey" not in params:
        return None
    cufe = params["documentkey"]
    fields = {"environment": DIAN_HOSTS[host], "cufe": cufe}
    return Payload(DIAN, fields, (_cufe_check(cufe),))


def dian_block(text: str) -> Payload | None:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = _DIAN_LINE.fullmatch(line)
        if match is None:
            continue
        name = _DIAN_FIELDS.get(match.group(1).lower())
        if name is not None and name not in fields:
            fields[name] = match.group(2)
    if "invoice_number" not in fields or not ("cufe" in fields or "issuer_tax_id" in fields):
        return None
    checks: list[Check] = []
    missing = [
        k
        for k in ("NumFac", "FecFac", "NitFac", "DocAdq", "ValTolFac", "CUFE")
        if _DIAN_FIELDS[k.lower()] not in fields
    ]
    if missing:
        checks.append(
            c.unchecked(
                "structure", f"missing {', '.join(missing)}; the mandatory list is unverified"
            )
        )
    else:
        checks.append(c.ok("structure"))
    nit_value = fields.get("issuer_tax_id", "")
    if nit_value:
        if "-" in nit_value:
            checks.append(c.tax_id("co.nit", "issuer_tax_id", nit_value))
        elif nit_value.isdigit() and 5 <= len(nit_value) <= 15:
            checks.append(c.unchecked("issuer_tax_id", "written without its verification digit"))
        else:
            checks.append(c.failed("issuer_tax_id", f"{nit_value!r} is not a NIT"))
    if "issue_date" in fields:
        iso, check = c.date(fields["issue_date"], ("YYYY-MM-DD",))
        if iso is None:
            del fields["issue_date"]
        checks.append(check)
    for name in ("subtotal", "tax_amount", "other_taxes", "total"):
        if name in fields:
            _, check = c.amount(fields[name], name, max_dec=2)
            checks.append(check)
    if "cufe" in fields:
        checks.append(_cufe_check(fields["cufe"]))
        url_key = fields.get("url", "").partition("documentkey=")[2]
        if url_key and url_key != fields["cufe"]:
            checks.append(c.failed("cufe_url", "the QRCode URL names another CUFE"))
    return Payload(DIAN, fields, tuple(checks))
