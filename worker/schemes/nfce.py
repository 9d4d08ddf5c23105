"""Brazil: NFC-e (`br.nfce`, digest §7): the consumer invoice URL, versions 1, 2 and 3,
online and offline (contingency)."""

from __future__ import annotations

import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c

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
