"""EMVCo merchant QR (`emv.merchant`, digest §14), `000201...6304` and its CRC-16, as PIX and
Latin American wallets use it: recognised only."""

from __future__ import annotations

import binascii
import re

from worker.schemes import Check, Payload
from worker.schemes import checks as c

_EMV = re.compile(r"000201.*6304[0-9A-Fa-f]{4}", re.DOTALL)


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): binascii's CRC-CCITT with that init."""
    return binascii.crc_hqx(data, 0xFFFF)


def emv(text: str) -> Payload | None:
    text = text.rstrip("\r\n")
    if _EMV.fullmatch(text) is None:
        return None
    checks: list[Check] = [c.recognised_only()]
    given = text[-4:].upper()
    if f"{_crc16(text[:-4].encode('utf-8')):04X}" == given:
        checks.append(c.ok("crc16"))
    else:
        checks.append(
            c.unchecked("crc16", "CRC-16 does not match the rule as we understand it (unverified)")
        )
    return Payload("emv.merchant", {}, tuple(checks))
