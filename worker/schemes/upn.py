"""Slovenia: UPN QR (`si.upn`, digest §13), ISO-8859-2 lines after `UPNQR`: recognised only."""

from __future__ import annotations

from worker.schemes import Payload
from worker.schemes import checks as c
from worker.schemes.epc import lines_of


def is_upn_candidate(text: str) -> bool:
    return text.startswith("UPNQR") and text[5:6] in ("\n", "\r")


def upn(text: str, data: bytes | None) -> Payload:
    if data is not None:
        text = data.decode("iso-8859-2")  # UPN QR is ISO-8859-2 whatever the decoder guessed
    lines = lines_of(text)
    return Payload("si.upn", {"lines": str(len(lines))}, (c.recognised_only(),))
