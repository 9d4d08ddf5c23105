"""The QR bit stream: segments to bytes, and the bytes to the text, content type and
symbology identifier zxing-cpp gives for the same symbol (its Content model: zxing-cpp 3.x,
core/src/Content.cpp and qrcode/QRDecoder.cpp).

zxing-cpp keeps the raw bytes of every segment and a list of (ECI, start) entries: numeric
and alphanumeric segments are ISO-8859-1, kanji Shift_JIS, hanzi GB18030, byte segments of
unknown encoding; the first ECI designator replaces that list (bytes before it become
ISO-8859-1) and from then on only ECI designators change the encoding. Bytes of unknown
encoding are guessed together (ISO-8859-1, Shift_JIS or UTF-8) with the same heuristic.

This parser is stricter than zxing-cpp where zxing-cpp would still return something from a
malformed stream: an invalid mode, a numeric group over 999, an alphanumeric pair over
44*45+44, a truncated segment, bits after the terminator, padding codewords other than the
0xEC 0x11 alternation (after zero bytes), an ECI or charset we cannot render exactly, or an empty
symbol: each is a refusal (None), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

# zxing-cpp's ECI values for its non-ECI charsets.
_UNKNOWN = -1
_ISO8859_1 = 3
_SHIFT_JIS = 20
_UTF8 = 26
_GB18030 = 32
_BINARY = 899

# ECI -> Python codec, for the ECIs zxing-cpp maps to a character set (core/src/ECI.cpp).
# ECIs outside this table (reserved, GBK 31, user-defined) are refused.
_CODECS: dict[int, str] = {
    0: "cp437",
    1: "latin-1",
    2: "cp437",
    3: "latin-1",
    4: "iso8859-2",
    5: "iso8859-3",
    6: "iso8859-4",
    7: "iso8859-5",
    8: "iso8859-6",
    9: "iso8859-7",
    10: "iso8859-8",
    11: "iso8859-9",
    12: "iso8859-10",
    13: "iso8859-11",
    15: "iso8859-13",
    16: "iso8859-14",
    17: "iso8859-15",
    18: "iso8859-16",
    20: "shift_jis",
    21: "cp1250",
    22: "cp1251",
    23: "cp1252",
    24: "cp1256",
    25: "utf-16-be",
    26: "utf-8",
    27: "ascii",
    28: "big5",
    29: "gb2312",
    30: "euc-kr",
    32: "gb18030",
    33: "utf-16-le",
    34: "utf-32-be",
    35: "utf-32-le",
    170: "ascii",
    _BINARY: "latin-1",
}


class StreamError(Exception):
    """The bit stream is not one a reader may trust."""


@dataclass(slots=True)
class Content:
    data: bytearray = field(default_factory=bytearray)
    encodings: list[tuple[int, int]] = field(default_factory=list)
    has_eci: bool = False
    modifier: str = "1"
    gs1: bool = False
    aim: bool = False

    def switch(self, eci: int, is_eci: bool) -> None:
        if is_eci and not self.has_eci:
            self.encodings.clear()
        if is_eci or not self.has_eci:
            self.encodings.append((eci, len(self.data)))
        self.has_eci |= is_eci

    def blocks(self) -> list[tuple[int, bytes]]:
        default = _ISO8859_1 if self.has_eci else _UNKNOWN
        out: list[tuple[int, bytes]] = []
        if not self.encodings:
            out.append((default, bytes(self.data)))
        elif self.encodings[0][1] != 0:
            out.append((default, bytes(self.data[: self.encodings[0][1]])))
        for index, (eci, start) in enumerate(self.encodings):
            end = (
                self.encodings[index + 1][1] if index + 1 < len(self.encodings) else len(self.data)
            )
            if start != end:
                out.append((eci, bytes(self.data[start:end])))
        return out


@dataclass(frozen=True, slots=True)
class Decoded:
    data: bytes
    text: str
    content_type: str
    symbology_identifier: str


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.length = 8 * len(data)
        self.position = 0

    def available(self) -> int:
        return self.length - self.position

    def peek(self, count: int) -> int:
        return (self.value >> (self.length - self.position - count)) & ((1 << count) - 1)

    def read(self, count: int) -> int:
        if count > self.available():
            raise StreamError("truncated bit stream")
        value = self.peek(count)
        self.position += count
        return value


def _count_bits(mode: int, version: int) -> int:
    band = 0 if version <= 9 else 1 if version <= 26 else 2
    return {
        0x1: (10, 12, 14),
        0x2: (9, 11, 13),
        0x4: (8, 16, 16),
        0x8: (8, 10, 12),
        0xD: (8, 10, 12),
    }[mode][band]


def parse(data: bytes, version: int) -> Decoded:
    """The data codewords' content, as zxing-cpp gives it; StreamError when not trustworthy."""
    bits = _Bits(data)
    content = Content()
    while True:
        left = min(bits.available(), 4)
        if left == 0 or bits.peek(left) == 0:
            bits.position += left
            break
        mode = bits.read(4)
        if mode == 0x5:  # FNC1 in first position: GS1
            content.modifier = "3"
            content.gs1 = True
        elif mode == 0x9:  # FNC1 in second position: AIM application indicator
            if content.data:
                raise StreamError("AIM application indicator after data")
            content.modifier = "5"
            indicator = bits.read(8)
            if indicator < 100:
                content.data += f"{indicator:02d}".encode()
            elif 165 <= indicator <= 190 or 197 <= indicator <= 222:
                content.data.append(indicator - 100)
            else:
                raise StreamError("invalid AIM application indicator")
            content.aim = True
        elif mode == 0x3:  # structured append: index, count, parity; not part of the content
            bits.read(16)
        elif mode == 0x7:
            content.switch(_read_eci(bits), True)
        elif mode == 0x1:
            _numeric(bits, bits.read(_count_bits(mode, version)), content)
        elif mode == 0x2:
            _alphanumeric(bits, bits.read(_count_bits(mode, version)), content)
        elif mode == 0x4:
            count = bits.read(_count_bits(mode, version))
            content.switch(_UNKNOWN, False)
            for _ in range(count):
                content.data.append(bits.read(8))
        elif mode == 0x8:
            _kanji(bits, bits.read(_count_bits(mode, version)), content)
        elif mode == 0xD:
            if bits.read(4) != 1:
                raise StreamError("unsupported hanzi subset")
            _hanzi(bits, bits.read(_count_bits(mode, version)), content)
        else:
            raise StreamError(f"invalid mode {mode:#x}")
    _check_padding(data, bits)
    if not content.data:
        raise StreamError("empty symbol")
    return _render(content)


def _check_padding(data: bytes, bits: _Bits) -> None:
    """After the terminator: zero bits to the byte boundary, then 0xEC 0x11 alternating."""
    spare = (-bits.position) % 8
    if spare and bits.read(spare) != 0:
        raise StreamError("bits after the terminator")
    # Some encoders (segno among them) put a zero byte before the pad codewords, and a
    # sequence may start at either pad value; nothing else is accepted.
    rest = data[bits.position // 8 :].lstrip(b"\x00")
    first = rest[:1] == b"\x11"
    for index, value in enumerate(rest):
        if value != (0xEC, 0x11)[(index + first) % 2]:
            raise StreamError("non-standard padding")


def _read_eci(bits: _Bits) -> int:
    first = bits.read(8)
    if first & 0x80 == 0:
        value = first & 0x7F
    elif first & 0xC0 == 0x80:
        value = (first & 0x3F) << 8 | bits.read(8)
    elif first & 0xE0 == 0xC0:
        value = (first & 0x1F) << 16 | bits.read(16)
    else:
        raise StreamError("invalid ECI designator")
    if value not in _CODECS:
        raise StreamError(f"ECI {value} not rendered")
    return value


def _numeric(bits: _Bits, count: int, content: Content) -> None:
    content.switch(_ISO8859_1, False)
    while count:
        n = min(count, 3)
        value = bits.read(1 + 3 * n)
        if value >= 10**n:
            raise StreamError("numeric group out of range")
        content.data += f"{value:0{n}d}".encode()
        count -= n


def _alphanumeric(bits: _Bits, count: int, content: Content) -> None:
    chars: list[str] = []
    while count > 1:
        pair = bits.read(11)
        if pair >= 45 * 45:
            raise StreamError("alphanumeric pair out of range")
        chars += [_ALPHANUMERIC[pair // 45], _ALPHANUMERIC[pair % 45]]
        count -= 2
    if count == 1:
        single = bits.read(6)
        if single >= 45:
            raise StreamError("alphanumeric character out of range")
        chars.append(_ALPHANUMERIC[single])
    text = "".join(chars)
    if content.gs1 or content.aim:
        # FNC1 modes: a single '%' is the GS separator, '%%' a literal '%'.
        out: list[str] = []
        i = 0
        while i < len(text):
            if text[i] == "%":
                if i + 1 < len(text) and text[i + 1] == "%":
                    out.append("%")
                    i += 2
                    continue
                out.append("\x1d")
            else:
                out.append(text[i])
            i += 1
        text = "".join(out)
    content.switch(_ISO8859_1, False)
    content.data += text.encode("ascii")


def _kanji(bits: _Bits, count: int, content: Content) -> None:
    content.switch(_SHIFT_JIS, False)
    for _ in range(count):
        value = bits.read(13)
        assembled = (value // 0xC0) << 8 | value % 0xC0
        assembled += 0x8140 if assembled < 0x1F00 else 0xC140
        content.data += assembled.to_bytes(2, "big")


def _hanzi(bits: _Bits, count: int, content: Content) -> None:
    content.switch(_GB18030, False)
    for _ in range(count):
        value = bits.read(13)
        assembled = (value // 0x60) << 8 | value % 0x60
        assembled += 0xA1A1 if assembled < 0x0A00 else 0xA6A1
        content.data += assembled.to_bytes(2, "big")


def guess_encoding(data: bytes) -> int:
    """zxing-cpp's GuessTextEncoding (fallback ISO-8859-1), as an ECI value."""
    can_iso = can_sjis = can_utf8 = True
    utf8_left = utf8_multi = 0
    sjis_left = sjis_katakana = 0
    sjis_cur_kata = sjis_cur_double = sjis_max_kata = sjis_max_double = 0
    iso_high_other = 0
    bom = len(data) > 3 and data[0] == 0xEF and data[1] == 0xBB and data[2] == 0xBF
    for value in data:
        if not (can_iso or can_sjis or can_utf8):
            break
        if can_utf8:
            if utf8_left > 0:
                if value & 0x80 == 0:
                    can_utf8 = False
                else:
                    utf8_left -= 1
            elif value & 0x80:
                if value & 0x40 == 0:
                    can_utf8 = False
                else:
                    utf8_left += 1
                    if value & 0x20 == 0:
                        utf8_multi += 1
                    else:
                        utf8_left += 1
                        if value & 0x10 == 0:
                            utf8_multi += 1
                        else:
                            utf8_left += 1
                            if value & 0x08 == 0:
                                utf8_multi += 1
                            else:
                                can_utf8 = False
        if can_iso:
            if 0x7F < value < 0xA0:
                can_iso = False
            elif value > 0x9F and (value < 0xC0 or value in (0xD7, 0xF7)):
                iso_high_other += 1
        if can_sjis:
            if sjis_left > 0:
                if value < 0x40 or value == 0x7F or value > 0xFC:
                    can_sjis = False
                else:
                    sjis_left -= 1
            elif (
                value in (0x80, 0xA0)
                or value > 0xEF
                or (value < 0x20 and value not in (0x0A, 0x0D))
            ):
                can_sjis = False
            elif 0xA0 < value < 0xE0:
                sjis_katakana += 1
                sjis_cur_double = 0
                sjis_cur_kata += 1
                sjis_max_kata = max(sjis_max_kata, sjis_cur_kata)
            elif value > 0x7F:
                sjis_left += 1
                sjis_cur_kata = 0
                sjis_cur_double += 1
                sjis_max_double = max(sjis_max_double, sjis_cur_double)
            else:
                sjis_cur_kata = 0
                sjis_cur_double = 0
    if can_utf8 and utf8_left > 0:
        can_utf8 = False
    if can_sjis and sjis_left > 0:
        can_sjis = False
    if can_utf8 and (bom or utf8_multi > 0):
        return _UTF8
    if can_sjis and (sjis_max_kata >= 3 or sjis_max_double >= 3):
        return _SHIFT_JIS
    if can_iso and can_sjis:
        two_katakana = sjis_max_kata == 2 and sjis_katakana == 2
        return _SHIFT_JIS if two_katakana or iso_high_other * 10 >= len(data) else _ISO8859_1
    if can_iso:
        return _ISO8859_1
    if can_sjis:
        return _SHIFT_JIS
    if can_utf8:
        return _UTF8
    return _ISO8859_1


def _is_text(eci: int) -> bool:
    return 0 <= eci <= 170


def _render(content: Content) -> Decoded:
    blocks = content.blocks()
    unknown = b"".join(part for eci, part in blocks if eci == _UNKNOWN)
    fallback = guess_encoding(unknown) if unknown else _UNKNOWN
    text_parts: list[str] = []
    binary: list[bool] = []
    for eci, part in blocks:
        effective = fallback if eci == _UNKNOWN else eci
        codec = _CODECS[effective] if _is_text(effective) else _CODECS[_BINARY]
        try:
            text_parts.append(part.decode(codec))
        except UnicodeDecodeError as error:
            # zxing-cpp would substitute characters here; we cannot promise the same ones.
            raise StreamError(f"bytes not valid in ECI {effective}") from error
        controls = any(c < 0x20 and c not in (0x09, 0x0A, 0x0D) for c in part)
        binary.append(
            not _is_text(effective) or (0 < effective < 28 and effective != 25 and controls)
        )
    data = bytes(content.data)
    if content.gs1:
        content_type = "GS1"
    elif len(data) > 6 and data[:4] == b"[)>\x1e" and data[4:6].isdigit():
        content_type = "ISO15434"
    elif not any(binary):
        content_type = "Text"
    elif all(binary):
        content_type = "Binary"
    else:
        content_type = "Mixed"
    return Decoded(
        data=data,
        text="".join(text_parts),
        content_type=content_type,
        symbology_identifier=f"]Q{content.modifier}",
    )
