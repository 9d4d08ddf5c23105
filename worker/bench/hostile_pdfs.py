"""Hostile PDF files, written byte by byte, for the tests and `python -m worker.bench.hostile`.

Each is the red-team case of issue 17 rebuilt exactly: a one-page PDF whose content
stream inflates to a gigabyte of `q Q ` no-ops (about 1 MB on disk), a `/Pages` chain
10,000 deep, a page tree that loops, and a valid PDF with a user password (RC4, the
standard security handler, revision 2). Two more reach what no cheap check foresees: a
font program that inflates to a gigabyte, and a page of nested form XObjects that draws a
square a billion times (a few hundred bytes). No PDF library is needed to write them.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

# The padding string of the PDF standard security handler (ISO 32000-1, 7.6.3.3).
_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
_FILE_ID = bytes.fromhex("8a6a5ec0d5e2c0d2c6c2e4a8d2b6f0c1")
_CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
_A4 = b"/MediaBox [0 0 595 842]"


def pdf(objects: list[bytes], *, trailer: bytes = b"") -> bytes:
    """A PDF of `objects` (numbered from 1; object 1 is the catalog), with a correct
    cross-reference table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        trailer,
        xref,
    )
    return bytes(out)


def stream(entries: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (entries, len(data), data)


def deflate_repeated(chunk: bytes, times: int) -> bytes:
    """zlib data inflating to `chunk` repeated `times` times, built from one compressed
    copy: full-flushed deflate blocks are byte-aligned and stand alone, so they can be
    concatenated. A gigabyte of output costs a second to build, not the seven a
    compressor takes."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = raw.compress(chunk) + raw.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(times):
        checksum = zlib.adler32(chunk, checksum)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    return b"\x78\xda" + block * times + final + struct.pack(">I", checksum)


def content_bomb(inflated: int = 1_000_000_000) -> bytes:
    """One A4 page whose FlateDecode content stream inflates to about `inflated` bytes of
    `q Q ` (save and restore the graphics state: no-ops). The issue's file: 1 GB, 970 KB."""
    chunk = b"q Q " * (1 << 18)
    data = deflate_repeated(chunk, max(1, -(-inflated // len(chunk))))
    return pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R %s /Contents 4 0 R >>" % _A4,
            stream(b"/Filter /FlateDecode", data),
        ]
    )


def deep_page_tree(depth: int = 10_000) -> bytes:
    """A `/Pages` node holding a `/Pages` node ... `depth` levels down to one page."""
    objects = [_CATALOG]
    for level in range(depth):
        kid = 3 + level
        objects.append(b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % kid)
    objects.append(b"<< /Type /Page %s >>" % _A4)
    return pdf(objects)


def page_tree_loop() -> bytes:
    """Two `/Pages` nodes, each the other's only kid, claiming one page."""
    return pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
        ]
    )


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def _padded(password: bytes) -> bytes:
    return (password + _PASSWORD_PAD)[:32]


def with_user_password(
    user: bytes = b"secret",
    owner: bytes = b"owner",
    content: bytes = b"0 0 0 rg 100 600 200 200 re f",
) -> bytes:
    """A valid one-page PDF that opens only with the user password `user` (40-bit RC4,
    revision 2): its content stream is encrypted with the object's key, as readers expect."""
    permissions = -4
    owner_value = _rc4(hashlib.md5(_padded(owner)).digest()[:5], _padded(user))
    key = hashlib.md5(
        _padded(user) + owner_value + struct.pack("<i", permissions) + _FILE_ID
    ).digest()[:5]
    user_value = _rc4(key, _PASSWORD_PAD)
    object_key = hashlib.md5(key + struct.pack("<I", 4)[:3] + b"\x00\x00").digest()[:10]
    encrypt = b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
        owner_value.hex().encode(),
        user_value.hex().encode(),
        permissions,
    )
    return pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R %s /Contents 4 0 R >>" % _A4,
            stream(b"", _rc4(object_key, content)),
            encrypt,
        ],
        trailer=b"/Encrypt 5 0 R /ID [<%s> <%s>]"
        % (_FILE_ID.hex().encode(), _FILE_ID.hex().encode()),
    )


def font_bomb(inflated: int = 1_000_000_000) -> bytes:
    """One page showing a letter in a TrueType font whose embedded program (FontFile2)
    inflates to about `inflated` bytes of zeros: PDFium loads a font program whole."""
    chunk = bytes(1 << 20)
    data = deflate_repeated(chunk, max(1, -(-inflated // len(chunk))))
    return pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R %s /Resources << /Font << /F1 5 0 R >> >> "
            b"/Contents 4 0 R >>" % _A4,
            stream(b"", b"BT /F1 24 Tf 100 700 Td (A) Tj ET"),
            b"<< /Type /Font /Subtype /TrueType /BaseFont /Bomb /FirstChar 65 /LastChar 65 "
            b"/Widths [600] /FontDescriptor 6 0 R >>",
            b"<< /Type /FontDescriptor /FontName /Bomb /Flags 32 /FontBBox [0 0 1000 1000] "
            b"/ItalicAngle 0 /Ascent 800 /Descent -200 /CapHeight 700 /StemV 80 "
            b"/FontFile2 7 0 R >>",
            stream(b"/Filter /FlateDecode /Length1 %d" % inflated, data),
        ]
    )


def nested_forms(depth: int = 9, fanout: int = 10) -> bytes:
    """One page drawing form XObject 0, which draws form 1 `fanout` times, ... down to a
    small filled square: fanout ** depth squares (a billion at the defaults) from a few
    hundred bytes of content that inflate to nothing."""
    first_form = 5
    forms = []
    for level in range(depth):
        last = level == depth - 1
        content = b"0 0 0 rg 0 0 1 1 re f" if last else b" ".join([b"/X Do"] * fanout)
        resources = (
            b"/Resources << /XObject << /X %d 0 R >> >>" % (first_form + level + 1)
            if level < depth - 1
            else b""
        )
        forms.append(
            stream(b"/Type /XObject /Subtype /Form /BBox [0 0 595 842] %s" % resources, content)
        )
    return pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R %s /Resources << /XObject << /X %d 0 R >> >> "
            b"/Contents 4 0 R >>" % (_A4, first_form),
            stream(b"", b"/X Do"),
            *forms,
        ]
    )


def slow_strokes(strokes: int = 20_000) -> bytes:
    """One page of `strokes` wide strokes across the whole page, uncompressed (about
    43 bytes each): PDFium needs about 0.6 ms per stroke at 200 dpi and 30 MiB, so the
    page takes seconds to render with nothing to refuse."""
    content = b"60 w 1 J 0 0 m 595 842 l 595 0 l 0 842 l S\n" * strokes
    return pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R %s /Contents 4 0 R >>" % _A4,
            stream(b"", content),
        ]
    )
