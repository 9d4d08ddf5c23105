"""Slovakia: PAY by square (`sk.bysquare`, digest §13), Base32hex of an LZMA body: recognised
only, by decoding it."""

from __future__ import annotations

import base64
import binascii
import lzma
import re
import struct
import zlib

from worker.schemes import Check, Payload
from worker.schemes import checks as c

BYSQUARE = "sk.bysquare"
_BASE32HEX = re.compile(r"[0-9A-V]{16,}")
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA1, "lc": 3, "lp": 0, "pb": 2, "dict_size": 128 * 1024}]


def _base32hex(text: str) -> bytes | None:
    body = text + "=" * (-len(text) % 8)
    try:
        return base64.b32hexdecode(body)
    except binascii.Error:
        return None  # a length Base32 cannot have


def is_bysquare_candidate(text: str) -> bool:
    return _BASE32HEX.fullmatch(text) is not None


def bysquare(text: str) -> Payload | None:
    head = _base32hex(text[:8])
    if head is None or head[1] & 0x0F:
        return None  # the header's reserved nibble is zero
    raw = _base32hex(text)
    if raw is None or len(raw) < 5:
        return None
    bysquare_type, version, document_type = raw[0] >> 4, raw[0] & 0x0F, raw[1] >> 4
    (length,) = struct.unpack("<H", raw[2:4])
    if length < 4:
        return None  # too short for its CRC32
    try:
        body = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_LZMA_FILTERS).decompress(
            raw[4:], length
        )
    except lzma.LZMAError:
        return None
    if len(body) != length or length < 4:
        return None
    fields = {
        "type": str(bysquare_type),
        "version": str(version),
        "document_type": str(document_type),
    }
    checks: list[Check] = [c.recognised_only()]
    if zlib.crc32(body[4:]) == struct.unpack("<I", body[:4])[0]:
        checks.append(c.ok("crc32"))
    else:
        checks.append(
            c.unchecked("crc32", "CRC32 does not match the rule as we understand it (unverified)")
        )
    return Payload(BYSQUARE, fields, tuple(checks))
