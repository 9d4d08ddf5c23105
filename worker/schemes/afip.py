"""Argentina: AFIP / ARCA (`ar.afip`, digest §4): the /fe/qr URL whose `p` is Base64 JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from worker.schemes import Check, Payload
from worker.schemes import checks as c

AFIP = "ar.afip"
AFIP_HOSTS = frozenset({"www.afip.gob.ar", "afip.gob.ar", "www.arca.gob.ar", "arca.gob.ar"})
_AFIP_FIELDS = {
    "ver": "version",
    "fecha": "issue_date",
    "cuit": "issuer_tax_id",
    "ptoVta": "point_of_sale",
    "tipoCmp": "document_type",
    "nroCmp": "invoice_number",
    "importe": "total",
    "moneda": "currency",
    "ctz": "exchange_rate",
    "tipoDocRec": "buyer_id_type",
    "nroDocRec": "buyer_tax_id",
    "tipoCodAut": "authorization_type",
    "codAut": "authorization_code",
}


def _b64_lenient(value: str) -> bytes:
    """Standard or URL-safe Base64, with or without padding and whitespace (§4 pitfalls)."""
    value = "".join(value.split()).replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def afip(host: str, path: str, query: str) -> Payload | None:
    if not path.lower().startswith("/fe/qr"):
        return None
    params = c.query_pairs(query)
    if "p" not in params:
        return None
    fields: dict[str, str] = {"authority": "arca" if "arca" in host else "afip"}
    try:
        raw = json.loads(_b64_lenient(params["p"]), parse_float=str, parse_int=str)
    except (binascii.Error, ValueError) as exc:
        return Payload(AFIP, fields, (c.failed("json", f"p is not Base64 JSON: {exc}"),))
    if not isinstance(raw, dict):
        return Payload(AFIP, fields, (c.failed("json", "p is not a JSON object"),))
    checks: list[Check] = [c.ok("json")]
    for key, name in _AFIP_FIELDS.items():
        value: Any = raw.get(key)
        if value is not None and not isinstance(value, (dict, list)):
            fields[name] = str(value).strip()
    # Which keys are required is in a spec PDF our reference could not read: a missing key
    # makes the structure not checkable rather than failed; a version other than 1 fails.
    expected = ("ver", "fecha", "cuit", "ptoVta", "tipoCmp", "nroCmp", "importe", "moneda")
    missing = [k for k in expected if not fields.get(_AFIP_FIELDS[k])]
    missing += [k for k in ("ctz", "tipoCodAut", "codAut") if k not in raw]
    if fields.get("version") not in (None, "1"):
        structure = c.failed("structure", f"version {fields['version']!r} is not 1")
    elif missing:
        detail = f"missing {', '.join(missing)}; which keys are required is unverified"
        structure = c.unchecked("structure", detail)
    else:
        structure = c.ok("structure")
    if fields.get("issuer_tax_id"):
        checks.append(c.tax_id("ar.cuit", "issuer_tax_id", fields["issuer_tax_id"]))
    if fields.get("buyer_id_type") == "80" and fields.get("buyer_tax_id"):
        checks.append(c.tax_id("ar.cuit", "buyer_tax_id", fields["buyer_tax_id"]))
    if fields.get("issue_date"):
        iso, check = c.date(fields["issue_date"], ("YYYY-MM-DD", "YYYYMMDD"))
        if iso:
            fields["issue_date"] = iso
        else:
            del fields["issue_date"]
        checks.append(check)
    if fields.get("total"):
        value, check = c.amount(fields["total"])
        checks.append(check)
    code = fields.get("authorization_code")
    if code:
        ok = code.isdigit() and len(code) == 14
        checks.append(
            c.ok("authorization_code")
            if ok
            else c.failed("authorization_code", f"{code!r} is not 14 digits")
        )
    return Payload(AFIP, fields, (structure, *checks))
