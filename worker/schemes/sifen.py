"""Paraguay: SIFEN (`py.sifen`, digest §14), a consultation URL on any host, known by its
`nVersion` and `cHashQR` parameters: recognised only."""

from __future__ import annotations

from worker.schemes import Payload
from worker.schemes import checks as c


def sifen(query: str) -> Payload | None:
    params = c.query_pairs(query)
    if "nversion" not in params or "chashqr" not in params:
        return None
    fields = {"version": params["nversion"], "hash": params["chashqr"]}
    if params.get("id"):
        fields["cdc"] = params["id"]
    return Payload("py.sifen", fields, (c.recognised_only(),))
