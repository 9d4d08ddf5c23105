"""Mexico: CFDI (`mx.cfdi`, digest §3): the SAT's verification URL of a CFDI 3.3/4.0 or a
retention, and the host-less CFDI 3.2 query."""

from __future__ import annotations

import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c

CFDI = "mx.cfdi"
CFDI_HOSTS = {
    "verificacfdi.facturaelectronica.sat.gob.mx": "cfdi",
    "prodretencionverificacion.clouda.sat.gob.mx": "retenciones",
}
# An RFC may hold `&` (written `&amp;`): split only where a known key follows (digest §3).
_CFDI_SPLIT = re.compile(r"&(?=(?:id|re|rr|nr|tt|fe)=)", re.IGNORECASE)
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_SELLO8 = re.compile(r"[A-Za-z0-9+/=]{8}")


def cfdi(query: str, document: str) -> Payload | None:
    params = c.query_pairs(query.lstrip("?&"), _CFDI_SPLIT)
    if "id" not in params or not ("re" in params or "rr" in params or "nr" in params):
        return None  # another page on the same host
    return _cfdi_payload(params, document, legacy=False)


def cfdi_legacy(text: str) -> Payload | None:
    """CFDI 3.2: `?re=…&rr=…&tt=…&id=…`, no host and no `fe`."""
    params = c.query_pairs(text[1:], _CFDI_SPLIT)
    if not {"re", "rr", "tt", "id"} <= params.keys():
        return None
    return _cfdi_payload(params, "cfdi", legacy=True)


def _cfdi_payload(params: dict[str, str], document: str, *, legacy: bool) -> Payload:
    fields = {"document": document, "version": "3.2" if legacy else "3.3/4.0"}
    checks: list[Check] = []
    required = ("id", "re", "tt") + (() if legacy else ("fe",))
    problems = [f"missing {k}" for k in required if not params.get(k)]
    if not (params.get("rr") or params.get("nr")):
        problems.append("missing rr")
    uuid = params.get("id", "")
    if uuid:
        fields["uuid"] = uuid
        if _UUID.fullmatch(uuid):
            checks.append(c.ok("uuid"))
        else:
            checks.append(c.failed("uuid", f"{uuid!r} is not a UUID"))
    for key, name in (("re", "issuer_tax_id"), ("rr", "buyer_tax_id")):
        value = params.get(key, "").replace("&amp;", "&")
        if value:
            fields[name] = value
            checks.append(c.tax_id("mx.rfc", name, value))
    if params.get("nr"):
        fields["buyer_tax_id"] = params["nr"]  # a foreign receiver's id: no rule to check
    if params.get("tt"):
        value, check = c.amount(params["tt"], max_int=18, max_dec=6)
        if value is not None:
            fields["total"] = value
        checks.append(check)
    if "fe" in params:
        seal = params["fe"]
        fields["signature"] = seal
        if not _SELLO8.fullmatch(seal):
            problems.append(f"fe {seal!r} is not the last 8 Base64 characters of the seal")
    return Payload(CFDI, fields, (c.structure("structure", problems), *checks))
