"""Czech SID (`cz.sid`, digest §13), the "QR Faktura" invoice code `SID*1.0*...`: recognised
only."""

from __future__ import annotations

from worker.schemes import Payload
from worker.schemes import checks as c


def sid(text: str) -> Payload:
    version = text.split("*", 2)[1] if text.count("*") >= 1 else ""
    return Payload("cz.sid", {"version": version}, (c.recognised_only(),))
