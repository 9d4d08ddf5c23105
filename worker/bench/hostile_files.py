"""Hostile image files, built on the fly so that none has to live in the repository.

Each generator returns the bytes of a valid file that is small on disk and expensive to
decode: the inputs the red-team passes of issues 9 and 17 used against the engine, rebuilt
exactly (same container, compression, sizes and frame or scan counts). They are written
chunk by chunk with `struct` and `zlib`, so building one costs a few megabytes, never the
pixels it declares. Only `animated_webp` (libwebp) and `progressive_jpeg_scans` (libjpeg)
need an encoder, through Pillow.

`code` arguments take a module matrix (2-D bool array, True = dark module, quiet zone
included by the caller or not) drawn dark on the page, so a test can also assert that a
large page is still read, not merely survived.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable, Iterator

import numpy as np

# A side whose square is just under the default QRW_MAX_PIXELS (60,000,000): the largest
# square page the engine accepts, as the red-team files used.
MAX_SIDE = 7745


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _rows(
    side: int, channels: int, paper: bytes, ink: bytes, code: np.ndarray | None
) -> Iterator[bytes]:
    """Yield the raw rows of a side x side page: `paper` everywhere, `ink` on the dark
    modules of `code`, centred, each module side // (2 * code width) pixels."""
    blank = paper * side
    if code is None:
        for _ in range(side):
            yield blank
        return
    modules = code.shape[0]
    module = max(1, side // (2 * modules))
    top = (side - modules * module) // 2
    page_row = np.frombuffer(blank, np.uint8).reshape(side, channels)
    inked = np.frombuffer(ink, np.uint8)
    for y in range(side):
        m = (y - top) // module
        if not 0 <= m < modules:
            yield blank
            continue
        row = page_row.copy()
        dark = np.repeat(code[m].astype(bool), module)
        row[top : top + dark.size][dark] = inked
        yield row.tobytes()


def _deflate(rows: Iterable[bytes], *, prefix: bytes = b"", level: int = 9) -> bytes:
    packer = zlib.compressobj(level)
    parts = [packer.compress(prefix + row) for row in rows]
    parts.append(packer.flush())
    return b"".join(parts)


def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side white pixels: a few dozen KB that would inflate
    to side * side bytes of grayscale if anyone decoded it (400 MP at the default)."""
    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def rgba_png(side: int = MAX_SIDE, code: np.ndarray | None = None) -> bytes:
    """An 8-bit RGBA PNG of side x side, fully transparent except for the dark modules of
    `code` (opaque black). About 248 KB at the default side; 240 MB as decoded RGBA."""
    rows = _rows(side, 4, b"\x00\x00\x00\x00", b"\x00\x00\x00\xff", code)
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", _deflate(rows, prefix=b"\x00"))
        + _chunk(b"IEND", b"")
    )


def apng(frames: int = 1000, side: int = 1000, code: np.ndarray | None = None) -> bytes:
    """An animated PNG of `frames` RGBA frames of side x side, each fully repainted
    (APNG_DISPOSE_OP_NONE, APNG_BLEND_OP_SOURCE) with the same picture. The red-team file
    had 1,000 frames: about 4 MB decoded per frame, a few KB each on disk."""
    rows = _rows(side, 4, b"\xff\xff\xff\xff", b"\x00\x00\x00\xff", code)
    data = _deflate(rows, prefix=b"\x00")
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", header),
        _chunk(b"acTL", struct.pack(">II", frames, 0)),
    ]
    sequence = 0
    for index in range(frames):
        # fcTL: sequence, size, offset, delay 1/10 s, dispose none, blend source.
        control = struct.pack(">IIIIIHHBB", sequence, side, side, 0, 0, 1, 10, 0, 0)
        parts.append(_chunk(b"fcTL", control))
        sequence += 1
        if index == 0:
            parts.append(_chunk(b"IDAT", data))
        else:
            parts.append(_chunk(b"fdAT", struct.pack(">I", sequence) + data))
            sequence += 1
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def tiff_pages(pages: int = 20, side: int = MAX_SIDE, code: np.ndarray | None = None) -> bytes:
    """A little-endian TIFF of `pages` 8-bit grayscale side x side pages, each one
    deflate-compressed strip: about 1.7 MB at the defaults, 60 MP (60 MB) per page decoded."""
    strip = _deflate(_rows(side, 1, b"\xff", b"\x00", code), level=6)
    out = bytearray(b"II*\x00\x00\x00\x00\x00")  # the first IFD offset is patched below
    previous_link = 4
    for _ in range(pages):
        strip_offset = len(out)
        out += strip
        if len(out) % 2:
            out += b"\x00"
        ifd_offset = len(out)
        struct.pack_into("<I", out, previous_link, ifd_offset)
        tags = [
            (256, 4, side),  # ImageWidth, LONG
            (257, 4, side),  # ImageLength
            (258, 3, 8),  # BitsPerSample, SHORT
            (259, 3, 8),  # Compression: Adobe deflate
            (262, 3, 1),  # PhotometricInterpretation: BlackIsZero
            (273, 4, strip_offset),  # StripOffsets
            (277, 3, 1),  # SamplesPerPixel
            (278, 4, side),  # RowsPerStrip: one strip per page
            (279, 4, len(strip)),  # StripByteCounts
        ]
        out += struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        previous_link = len(out)
        out += b"\x00\x00\x00\x00"  # next IFD: none, unless another page follows
    return bytes(out)


def _riff_chunks(data: bytes) -> dict[bytes, bytes]:
    chunks, offset = {}, 12
    while offset + 8 <= len(data):
        kind, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        chunks[kind] = data[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    return chunks


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _u24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def animated_webp(frames: int = 20, side: int = MAX_SIDE, code: np.ndarray | None = None) -> bytes:
    """An animated WebP with a side x side canvas and `frames` frames, each a small
    lossless tile placed somewhere on the canvas: about 15 KB at the defaults, while a
    decoder composes every frame onto the whole canvas (240 MB of RGBA at the default).

    With `code`, the first frame is that code (opaque black on opaque white) at the
    canvas centre; the others are 32 x 32 tiles of noise along the diagonal.
    """
    from PIL import Image  # libwebp's encoder, for the tiles only

    def lossless(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGBA").save(
            buffer, format="WEBP", lossless=True, quality=0, method=0
        )
        return _riff_chunk(b"VP8L", _riff_chunks(buffer.getvalue())[b"VP8L"])

    rng = np.random.default_rng(9)
    body = [
        _riff_chunk(b"VP8X", bytes([0x12, 0, 0, 0]) + _u24(side - 1) + _u24(side - 1)),
        _riff_chunk(b"ANIM", b"\xff\xff\xff\x00" + struct.pack("<H", 0)),
    ]
    for index in range(frames):
        if index == 0 and code is not None:
            module = max(1, side // (2 * code.shape[0]))
            dark = np.kron(code, np.ones((module, module), bool))
            gray = np.where(dark, np.uint8(0), np.uint8(255))
            pixels = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
            x = y = (side - gray.shape[0]) // 2
        else:
            # Four grey levels: incompressible enough to be a real frame, small on disk.
            pixels = (rng.integers(0, 4, (32, 32, 4)) * 85).astype(np.uint8)
            x = y = index * (side - 32) // max(1, frames - 1)
        height, width = pixels.shape[:2]
        # Offsets are stored halved (frames sit on even pixels); flags 0: alpha-blend
        # onto the canvas, no disposal.
        header = _u24(x // 2) + _u24(y // 2) + _u24(width - 1) + _u24(height - 1) + _u24(100)
        body.append(_riff_chunk(b"ANMF", header + b"\x00" + lossless(pixels)))
    payload = b"WEBP" + b"".join(body)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def gif_frames(frames: int = 200_000) -> bytes:
    """A GIF89a of `frames` one-pixel frames, each with its graphic control extension:
    23 bytes a frame (4.6 MB at the default), all to be walked to count its pages."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    control = b"\x21\xf9\x04\x00\x01\x00\x00\x00"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + (control + image) * frames + b"\x3b"


def qr_modules(text: str, quiet_zone: int = 4) -> np.ndarray:
    """The module matrix of a QR code holding `text` (True = dark), with its quiet zone."""
    import zxingcpp

    symbol = np.asarray(
        zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode).to_image(
            scale=1, add_quiet_zones=False
        )
    )
    dark = symbol < 128
    return np.pad(dark, quiet_zone, constant_values=False)


def gif_blank_lzw(pixels: int, min_code_size: int = 2) -> bytes:
    """GIF LZW data for `pixels` pixels of colour index 1, in sub-blocks: what an encoder
    writes for a blank frame. Each code repeats the longest run in the table, so a 400 MP
    frame takes about 150 KB once the table is full (4,096 codes, no clear code)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    width, next_code, run_codes = min_code_size + 1, end + 1, {1: 1}
    bits = bit_count = 0
    out = bytearray()

    def emit(code: int) -> None:
        nonlocal bits, bit_count
        bits |= code << bit_count
        bit_count += width
        while bit_count >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            bit_count -= 8

    emit(clear)
    left, longest = pixels, 1
    while left:
        run = min(longest, left)
        emit(run_codes[run])
        left -= run
        if next_code < 4096:
            # The decoder adds this run plus one pixel to its table, as the encoder does.
            run_codes[run + 1] = next_code
            longest = max(longest, run + 1)
            next_code += 1
            # The decoder adds its entry one code later, so it widens one code later too.
            if next_code == (1 << width) + 1 and width < 12:
                width += 1
    emit(end)
    if bit_count:
        out.append(bits & 0xFF)
    blocks = b"".join(
        bytes([len(out[k : k + 255])]) + out[k : k + 255] for k in range(0, len(out), 255)
    )
    return bytes([min_code_size]) + blocks + b"\x00"


def gif_large_frame(frame_side: int = 20_000, screen: int = 16) -> bytes:
    """A GIF89a whose logical screen is screen x screen and whose second frame declares
    frame_side x frame_side (the red-team file of issue 17: 16 and 20000, about 150 KB of
    valid LZW data). Pillow grows its canvas to every frame it decodes, so the screen size
    in the header says nothing about the memory the second frame takes."""
    header = (
        b"GIF89a" + struct.pack("<HHBBB", screen, screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    )
    frames = b""
    for side in (screen, frame_side):
        control = b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # 1/10 s, no disposal
        descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0)
        frames += control + descriptor + gif_blank_lzw(side * side)
    return header + frames + b"\x3b"


def progressive_jpeg_scans(side: int = MAX_SIDE, repeats: int = 580_306) -> bytes:
    """A blank grayscale progressive JPEG of side x side whose last scan is repeated
    `repeats` times: the red-team file of issue 17 (7745 and 580,306: 52 MB, under
    QRW_MAX_BYTES). libjpeg decodes every scan over the whole coefficient buffer, about
    0.6 ms per megapixel per scan, in one C call that no deadline can interrupt."""
    from PIL import Image  # libjpeg's own progressive script, for the scans to repeat

    buffer = io.BytesIO()
    Image.new("L", (side, side), 255).save(buffer, format="JPEG", quality=90, progressive=True)
    return _repeat_last_scan(buffer.getvalue(), repeats)


def progressive_jpeg_page(
    code: np.ndarray | None = None,
    side: int = MAX_SIDE,
    *,
    mode: str = "RGB",
    subsampling: int = 0,
    extra_scans: int = 0,
    module: int = 24,
) -> bytes:
    """A white side x side progressive JPEG in Pillow's `mode` ("L", "RGB" or "CMYK") with
    `code` drawn at its centre, `module` pixels a module: libjpeg's own script (6 scans in
    gray, 10 in colour, 18 in CMYK), its last scan repeated `extra_scans` more times.
    `subsampling` is Pillow's, for RGB (0 = 4:4:4, the colour page whose scans cover the
    most pixels; 2 = 4:2:0, what cameras write)."""
    from PIL import Image

    page = np.full((side, side), 255, np.uint8)
    if code is not None:
        dark = np.kron(code, np.ones((module, module), bool))
        top, left = (side - dark.shape[0]) // 2, (side - dark.shape[1]) // 2
        page[top : top + dark.shape[0], left : left + dark.shape[1]][dark] = 0
    image = Image.fromarray(page).convert(mode)
    options = {"subsampling": subsampling} if mode == "RGB" else {}
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, progressive=True, **options)
    return _repeat_last_scan(buffer.getvalue(), extra_scans)


def _repeat_last_scan(data: bytes, repeats: int) -> bytes:
    # Entropy-coded data stuffs every 0xFF as FF 00, so the last FF DA starts the last scan,
    # which runs up to the end-of-image marker.
    last = data.rindex(b"\xff\xda")
    assert data.endswith(b"\xff\xd9")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def _png_page(code: np.ndarray, module: int, rgba: bool) -> tuple[bytes, bytes]:
    """The IHDR and IDAT chunks of an 8-bit gray (or RGBA) page showing `code`."""
    dark = np.kron(code, np.ones((module, module), bool))
    gray = np.where(dark, np.uint8(0), np.uint8(255))
    pixels = np.dstack([gray, gray, gray, np.full_like(gray, 255)]) if rgba else gray
    height, width = gray.shape
    rows = (b"\x00" + row.tobytes() for row in pixels.reshape(height, -1))
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if rgba else 0, 0, 0, 0)
    return _chunk(b"IHDR", header), _chunk(b"IDAT", _deflate(rows))


def png_ancillary(
    code: np.ndarray, kind: str = "zTXt", *, rgba: bool = False, after_pixels: bool = False
) -> bytes:
    """A valid PNG showing `code`, with one large ancillary chunk that no decoder needs for
    the pixels (issue 17, point 5): `kind` "prVt" is 20 MB of a private chunk, "tEXt" 20 MB
    of text, and "zTXt", "iTXt" and "iCCP" are 4 KB that inflate to 4 MB, past Pillow's
    MAX_TEXT_CHUNK (1 MB). The chunk goes before the pixel data, or after it."""
    bomb = zlib.compress(b"\x00" * (4 * 2**20), 9)
    bodies = {
        "prVt": b"\x00" * (20 * 2**20),
        "tEXt": b"Comment\x00" + b"x" * (20 * 2**20),
        "zTXt": b"Comment\x00\x00" + bomb,
        "iTXt": b"Comment\x00\x01\x00\x00\x00" + bomb,
        "iCCP": b"profile\x00\x00" + bomb,
    }
    header, pixels = _png_page(code, 4, rgba)
    extra = _chunk(kind.encode("ascii"), bodies[kind])
    middle = pixels + extra if after_pixels else extra + pixels
    return b"\x89PNG\r\n\x1a\n" + header + middle + _chunk(b"IEND", b"")


def apng_large_frame(frame_side: int = 20_000, canvas: int = 16) -> bytes:
    """An APNG with a canvas x canvas image whose second frame's fcTL declares
    frame_side x frame_side: the APNG form of the GIF whose frame outgrows its screen."""
    row = b"\x00" + b"\xff" * canvas
    data = _deflate([row] * canvas)
    header = struct.pack(">IIBBBBB", canvas, canvas, 8, 0, 0, 0, 0)
    first = struct.pack(">IIIIIHHBB", 0, canvas, canvas, 0, 0, 1, 10, 0, 0)
    second = struct.pack(">IIIIIHHBB", 1, frame_side, frame_side, 0, 0, 1, 10, 0, 0)
    big = _deflate([b"\x00" + b"\xff" * frame_side] * 64)  # the start of the huge frame
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"acTL", struct.pack(">II", 2, 0)),
            _chunk(b"fcTL", first),
            _chunk(b"IDAT", data),
            _chunk(b"fcTL", second),
            _chunk(b"fdAT", struct.pack(">I", 2) + big),
            _chunk(b"IEND", b""),
        ]
    )


def webp_large_frame(frame_side: int = 20_000, canvas: int = 32) -> bytes:
    """An animated WebP with a canvas x canvas canvas whose first frame is a 32x32 tile
    and whose second ANMF frame declares frame_side x frame_side around another: the WebP
    form of the same file."""
    out = bytearray(animated_webp(2, max(canvas, 34)))
    vp8x = out.index(b"VP8X") + 8
    out[vp8x + 4 : vp8x + 10] = _u24(canvas - 1) * 2
    second = out.index(b"ANMF", out.index(b"ANMF") + 4) + 8
    out[second : second + 6] = b"\x00" * 6  # at 0,0
    out[second + 6 : second + 12] = _u24(frame_side - 1) * 2
    return bytes(out)


def png_empty_chunks(
    megabytes: int = 50, kind: bytes = b"prVt", code: np.ndarray | None = None
) -> bytes:
    """A small gray PNG (showing `code`, when given) with `megabytes` of empty `kind`
    chunks (12 bytes each: 4.4 million at 50) between its header and its pixels: every
    reader of its chunks, ours included, steps over each one."""
    header, pixels = _png_page(code if code is not None else np.zeros((21, 21), bool), 4, False)
    empty = _chunk(kind, b"")
    return (
        b"\x89PNG\r\n\x1a\n"
        + header
        + empty * (megabytes * 10**6 // 12)
        + pixels
        + _chunk(b"IEND", b"")
    )


def webp_junk_chunks(megabytes: int = 50) -> bytes:
    """A two-frame animated WebP with `megabytes` of empty unknown chunks (8 bytes each:
    6 million at 50) before its frames, which libwebp skips and a frame walk steps over."""
    webp = animated_webp(2, 64)
    first = webp.index(b"ANMF")
    payload = webp[8:first] + b"JUNK\x00\x00\x00\x00" * (megabytes * 10**6 // 8) + webp[first:]
    return b"RIFF" + struct.pack("<I", len(payload)) + payload
