"""Latin America: Mexico CFDI (`mx.cfdi`, §3), Argentina AFIP/ARCA (`ar.afip`, §4), Peru
SUNAT (`pe.sunat`, §5), Colombia DIAN (`co.dian`, §6), Brazil NFC-e (`br.nfce`, §7)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from worker.schemes import Check, Payload
from worker.schemes import checks as c

# --- Mexico: CFDI -----------------------------------------------------------------------------

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


# --- Argentina: AFIP / ARCA -------------------------------------------------------------------

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


# --- Peru: SUNAT ------------------------------------------------------------------------------

SUNAT = "pe.sunat"
SUNAT_TYPES = {"01": "factura", "03": "boleta", "07": "nota_credito", "08": "nota_debito"}
_SERIE = re.compile(r"[A-Z0-9]{4}")


def is_sunat_candidate(text: str) -> bool:
    return (
        text[11:12] == "|" and text[:11].isdigit() and text[12:15] in ("01|", "03|", "07|", "08|")
    )


def sunat(text: str) -> Payload | None:
    parts = text.rstrip("\r\n").split("|")
    if parts and parts[-1] == "":
        parts.pop()
    if not 9 <= len(parts) <= 11:
        return None  # a pipe-separated text of another kind
    ruc, doc_type, serie, number, igv, total, date, buyer_type, buyer = (
        p.strip() for p in parts[:9]
    )
    fields = {
        "issuer_tax_id": ruc,
        "document_type": doc_type,
        "invoice_series": serie,
        "invoice_number": number,
        "buyer_id_type": buyer_type,
        "buyer_tax_id": buyer,
    }
    if len(parts) > 9 and parts[9]:
        fields["hash"] = parts[9]
    if len(parts) > 10 and parts[10]:
        fields["signature"] = parts[10]
    problems = []
    if not _SERIE.fullmatch(serie):
        problems.append(f"serie {serie!r} is not 4 characters")
    if not (number.isdigit() and len(number) <= 8):
        problems.append(f"number {number!r} is not up to 8 digits")
    checks = [c.tax_id("pe.ruc", "issuer_tax_id", ruc)]
    if buyer_type == "6":
        checks.append(c.tax_id("pe.ruc", "buyer_tax_id", buyer))
    elif buyer_type == "1":
        dni_ok = buyer.isdigit() and len(buyer) == 8
        checks.append(
            c.ok("buyer_tax_id")
            if dni_ok
            else c.failed("buyer_tax_id", f"DNI {buyer!r} is not 8 digits")
        )
    value, check = c.amount(igv, "tax_amount", max_dec=2)
    if value is not None:
        fields["tax_amount"] = value
    checks.append(check)
    value, check = c.amount(total, max_dec=2)
    if value is not None:
        fields["total"] = value
    checks.append(check)
    iso, check = c.date(date, ("YYYY-MM-DD", "DD/MM/YYYY"))
    if iso:
        fields["issue_date"] = iso
    checks.append(check)
    return Payload(SUNAT, fields, (c.structure("structure", problems), *checks))


# --- Colombia: DIAN ---------------------------------------------------------------------------

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


# --- Brazil: NFC-e ----------------------------------------------------------------------------

NFCE = "br.nfce"
_NFCE_P = re.compile(r"(\d{44})\|([23])\|")
_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")


def is_nfce_candidate(query: str) -> bool:
    return "p=" in query or "chNFe=" in query


def access_key_check(key: str) -> Check:
    """The chave de acesso's mod-11 check digit (hand-written: python-stdnum has none)."""
    total = sum(int(d) * (2 + i % 8) for i, d in enumerate(reversed(key[:43])))
    dv = 11 - total % 11
    dv = 0 if dv > 9 else dv
    if key[43] != str(dv):
        return c.failed("access_key", f"check digit {key[43]}, computed {dv}")
    return c.ok("access_key")


def _key_fields(key: str, fields: dict[str, str], checks: list[Check]) -> str:
    """Fields and checks from the 44-digit access key; returns its YYYY-MM."""
    fields.update(
        access_key=key,
        state_code=key[0:2],
        issuer_tax_id=key[6:20],
        model=key[20:22],
        invoice_series=key[22:25],
        invoice_number=key[25:34],
        emission_type=key[34],
    )
    checks.append(access_key_check(key))
    checks.append(c.tax_id("br.cnpj", "issuer_tax_id", key[6:20]))
    year, month = 2000 + int(key[2:4]), int(key[4:6])
    if not 1 <= month <= 12:
        checks.append(c.failed("issue_date", f"month {month} in the access key"))
    return f"{year}-{month:02d}"


def nfce(query: str) -> Payload | None:
    params = c.query_pairs(query)
    if "chnfe" in params and "nversao" in params:
        return _nfce_v1(params)
    p = params.get("p", "")
    if not _NFCE_P.match(p):
        return None
    parts = p.split("|")
    version = parts[1]
    fields: dict[str, str] = {"version": version}
    checks: list[Check] = []
    month = _key_fields(parts[0], fields, checks)
    fields["issue_month"] = month
    offline = len(parts) == 8
    expected = {("2", False): 5, ("2", True): 8, ("3", False): 3, ("3", True): 8}[
        (version, offline)
    ]
    problems = (
        [] if len(parts) == expected else [f"{len(parts)} fields, version {version} has 3, 5 or 8"]
    )
    if len(parts) > 2:
        fields["environment"] = {"1": "production", "2": "test"}.get(parts[2], parts[2])
        if parts[2] not in ("1", "2"):
            problems.append(f"tpAmb {parts[2]!r} is neither 1 nor 2")
    if offline:
        day, total = parts[3], parts[4]
        iso, check = c.date(f"{month}-{day.zfill(2)}", ("YYYY-MM-DD",))
        if iso:
            fields["issue_date"] = iso
        checks.append(check)
        value, check = c.amount(total, max_dec=2)
        if value is not None:
            fields["total"] = value
        checks.append(check)
    if version == "2" and len(parts) >= 5:
        fields["token_id"] = parts[-2]
        fields["hash"] = parts[-1]
        if offline:
            fields["digest_value"] = parts[5]
        if not _HEX40.fullmatch(parts[-1]):
            problems.append("cHashQRCode is not 40 hexadecimal characters")
        checks.append(c.unchecked("hash", "needs the issuer's secret CSC"))
    elif version == "3" and offline:
        fields["buyer_id_type"], fields["buyer_tax_id"], fields["signature"] = parts[5:8]
        checks.append(
            c.unchecked("signature", "needs the issuer's certificate; algorithm unverified")
        )
    return Payload(NFCE, fields, (c.structure("structure", problems), *checks))


def _nfce_v1(params: dict[str, str]) -> Payload:
    key = params["chnfe"]
    fields: dict[str, str] = {"version": params["nversao"]}
    checks: list[Check] = []
    problems = []
    if re.fullmatch(r"\d{44}", key):
        _key_fields(key, fields, checks)
    else:
        problems.append("chNFe is not 44 digits")
    if params.get("tpamb"):
        fields["environment"] = {"1": "production", "2": "test"}.get(
            params["tpamb"], params["tpamb"]
        )
    if params.get("cdest"):
        fields["buyer_tax_id"] = params["cdest"]
    if params.get("dhemi"):
        try:
            stamp = bytes.fromhex(params["dhemi"]).decode("ascii")
            iso, check = c.date(stamp[:10], ("YYYY-MM-DD",))
            if iso:
                fields["issue_date"] = iso
            checks.append(check)
        except ValueError:
            checks.append(c.failed("issue_date", "dhEmi is not hex of an ASCII timestamp"))
    for key_name, name in (("vnf", "total"), ("vicms", "tax_amount")):
        if params.get(key_name):
            value, check = c.amount(params[key_name], name, max_dec=2)
            if value is not None:
                fields[name] = value
            checks.append(check)
    if params.get("chashqrcode"):
        fields["hash"] = params["chashqrcode"]
        checks.append(c.unchecked("hash", "needs the issuer's secret CSC"))
    return Payload(NFCE, fields, (c.structure("structure", problems), *checks))
