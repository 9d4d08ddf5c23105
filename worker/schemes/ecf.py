"""Dominican Republic: e-CF (`do.ecf`, digest §14), the DGII's ConsultaTimbre URL: recognised
only."""

from __future__ import annotations

from worker.schemes import Payload
from worker.schemes import checks as c

ECF_HOSTS = frozenset({"ecf.dgii.gov.do", "fc.dgii.gov.do"})


def ecf(path: str, query: str) -> Payload | None:
    if "consultatimbre" not in path.lower():
        return None
    params = c.query_pairs(query)
    fields = {}
    rnc = params.get("rncemisor") or params.get("rnc")
    if rnc:
        fields["issuer_tax_id"] = rnc
    return Payload("do.ecf", fields, (c.recognised_only(),))
