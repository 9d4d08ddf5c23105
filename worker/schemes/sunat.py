"""Peru: SUNAT (`pe.sunat`, digest §5): the pipe-separated electronic receipt."""

from __future__ import annotations

import re

from worker.schemes import Payload
from worker.schemes import checks as c

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
