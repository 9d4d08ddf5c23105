"""PDF invoices of both kinds a billing system receives, with exact ground truth.

- **Born-digital** (``born_digital_pdf``): what invoicing software exports. Text is real
  PDF text (the standard Helvetica, no raster), the QR code is drawn as vector rectangles,
  one per run of dark modules (or, with ``code_as="image"``, placed as a small 1-pixel-per-
  module image, as some exporters do). One to three pages: the invoice, terms and
  conditions, a payment slip; the codes on the first, a middle or the last page, some
  documents with codes on two pages.
- **Scanned** (``scanned_pdf``, ``scanned_from_sample``): one image XObject covering each
  page, as a scanner writes it, at 200-300 DPI: the JPEG itself (DCTDecode), or a bitonal
  scan (CCITT Group 4, or 1-bit Flate), or 8-bit gray (Flate). ``scanned_from_sample``
  wraps an existing photo or scan sample (models.synth.corpus) in a PDF page without
  re-encoding a JPEG, so a benchmark can compare the same pixels as a file and as a PDF.

Every quad is in the pixel grid of the page rendered at ``Sample.dpi / 72`` times its size
in points (as for the other PDFs of models.synth): the symbol's own top-left, top-right,
bottom-right and bottom-left corners, quiet zone excluded. The files are written by a
small PDF writer here (no timestamps, no ids), so the same arguments give the same bytes.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import segno
from PIL import Image

from . import wording
from .degrade import degrade
from .geometry import as_quads, to_quad
from .invoice import CodeSpec, render_invoice
from .payloads import Payload, make_payload
from .qrcodes import MICRO_QR_FORMAT, QR_FORMAT, make_symbol
from .samples import SAMPLE_KINDS, Sample, TruthCode, sample_set

# The kinds this module adds to ``python -m models.synth --kind``.
PDF_KINDS: tuple[str, ...] = ("pdf_digital", "pdf_scanned")
ALL_KINDS: tuple[str, ...] = (*SAMPLE_KINDS, *PDF_KINDS)
# The resolution quads refer to: the engine's default QRW_PDF_DPI.
TRUTH_DPI = 200.0
A4_POINTS = (595.276, 841.89)
SCAN_ENCODINGS: tuple[str, ...] = ("jpeg", "ccitt", "bitonal", "gray")
# A scanner's own light touch: a slight skew, sensor noise, a little softness, uneven light.
_SCAN_DEGRADATIONS = ("rotation", "gaussian_blur", "noise", "illumination")
_STREAM = 7  # keeps these draws apart from samples.py's streams 1-4 and corpus.py's 5
_MARGIN = 48.0
# Where codes go on a born-digital page (x0, y0 from the top-left, in points, and the
# largest side a code may take there): the page's text keeps clear of all four.
_SLOTS: dict[str, tuple[float, float, float]] = {
    "header_right": (400.0, 40.0, 150.0),
    "totals_left": (_MARGIN, 560.0, 120.0),
    "footer_right": (400.0, 650.0, 150.0),
    "footer_left": (_MARGIN, 690.0, 110.0),
}


# --------------------------------------------------------------------------- the PDF writer


class _Writer:
    """Objects numbered in the order added; 1 is the catalogue, 2 the page tree, 3 and 4
    the standard fonts (Helvetica, Helvetica-Bold: every reader has them built in)."""

    def __init__(self) -> None:
        self.objects: list[bytes] = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"",  # the page tree, written last
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold "
            b"/Encoding /WinAnsiEncoding >>",
        ]
        self.pages: list[int] = []

    def add(self, body: bytes) -> int:
        self.objects.append(body)
        return len(self.objects)

    def stream(self, entries: bytes, data: bytes, *, compress: bool = True) -> int:
        if compress:
            data = zlib.compress(data, 6)
            entries += b" /Filter /FlateDecode"
        return self.add(
            b"<< " + entries + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"
        )

    def page(self, size: tuple[float, float], content: bytes, images: dict[str, int]) -> None:
        stream = self.stream(b"", content)
        xobjects = b" ".join(b"/%s %d 0 R" % (name.encode(), ref) for name, ref in images.items())
        body = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %s %s] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> /XObject << %s >> >> >>"
            % (_num(size[0]), _num(size[1]), stream, xobjects)
        )
        self.pages.append(self.add(body))

    def finish(self) -> bytes:
        kids = b" ".join(b"%d 0 R" % ref for ref in self.pages)
        self.objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(self.pages))
        out = io.BytesIO()
        out.write(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(self.objects, start=1):
            offsets.append(out.tell())
            out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
        xref = out.tell()
        out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(self.objects) + 1))
        for offset in offsets:
            out.write(b"%010d 00000 n \n" % offset)
        out.write(
            b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(self.objects) + 1, xref)
        )
        return out.getvalue()


def _num(value: float) -> bytes:
    return (b"%.3f" % value).rstrip(b"0").rstrip(b".")


def _text(
    x: float, y_top: float, size: float, text: str, page_h: float, bold: bool = False
) -> bytes:
    """One line of real PDF text, its baseline `y_top` points below the page's top."""
    raw = text.encode("cp1252", errors="replace")
    escaped = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    font = b"/F2" if bold else b"/F1"
    return b"BT %s %s Tf 1 0 0 1 %s %s Tm (%s) Tj ET\n" % (
        font,
        _num(size),
        _num(x),
        _num(page_h - y_top),
        escaped,
    )


# --------------------------------------------------------------------------- born-digital


@dataclass(frozen=True)
class _Placed:
    """A code drawn on a page: its content and where its symbol's corners are (points,
    from the page's top-left)."""

    payload: Payload
    format: str
    corners: npt.NDArray[np.float64]  # (4, 2): TL, TR, BR, BL of the symbol proper


def _symbol_drawing(
    symbol: segno.QRCode,
    origin: tuple[float, float],
    module: float,
    angle: float,
    page_h: float,
    invert: bool,
) -> tuple[bytes, npt.NDArray[np.float64]]:
    """The symbol as vector rectangles and its corners (points, from the top-left).

    Drawn in module space (one unit a module, y down, the quiet zone included) through
    one `cm`: its origin at the quiet zone's top-left, turned `angle` degrees
    counter-clockwise about the quiet zone's centre.
    """
    dark = np.asarray(symbol.matrix, dtype=bool)
    modules = dark.shape[0]
    quiet = 2 if symbol.is_micro else 4
    side = modules + 2 * quiet
    rad = np.deg2rad(angle)
    cos, sin = np.cos(rad), np.sin(rad)
    centre = np.array(origin) + module * side / 2.0

    def place(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # Module space to page points from the top-left (y down); counter-clockwise on
        # the page is clockwise in y-down coordinates.
        local = (points - side / 2.0) * module
        turned = np.stack(
            [local[:, 0] * cos + local[:, 1] * sin, -local[:, 0] * sin + local[:, 1] * cos], axis=1
        )
        return turned + centre

    lo, hi = float(quiet), float(quiet + modules)
    corners = place(np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]]))
    # PDF user space is y up: x' = a*u + c*v + e, y' = b*u + d*v + f for module (u, v).
    top_left = place(np.array([[0.0, 0.0]]))[0]
    a, b = module * cos, module * sin
    c, d = module * sin, -module * cos
    e, f = top_left[0], page_h - top_left[1]
    ops = [b"q %s %s %s %s %s %s cm\n" % tuple(_num(v) for v in (a, b, c, d, e, f))]
    if invert:
        ops.append(b"0 g 0 0 %d %d re f 1 g\n" % (side, side))
    else:
        ops.append(b"0 g\n")
    for row in range(modules):
        column = 0
        while column < modules:
            if not dark[row, column]:
                column += 1
                continue
            start = column
            while column < modules and dark[row, column]:
                column += 1
            ops.append(b"%d %d %d 1 re\n" % (quiet + start, quiet + row, column - start))
    ops.append(b"f Q\n")
    return b"".join(ops), corners


def _symbol_image(writer: _Writer, symbol: segno.QRCode, invert: bool) -> tuple[int, int]:
    """The symbol as a small gray image, one pixel a module, quiet zone included."""
    quiet = 2 if symbol.is_micro else 4
    dark = np.pad(np.asarray(symbol.matrix, dtype=bool), quiet)
    pixels = np.where(dark != invert, 0, 255).astype(np.uint8)
    side = pixels.shape[0]
    ref = writer.stream(
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Interpolate false" % (side, side),
        pixels.tobytes(),
    )
    return ref, side


def _page_content(
    rng: np.random.Generator,
    role: str,
    page_index: int,
    page_count: int,
    size: tuple[float, float],
    free: set[str],
) -> bytes:
    """The text of one page, kept out of the code slots that are not `free` of text."""
    page_h = size[1]
    out: list[bytes] = []
    seller, buyer = wording.party(rng), wording.party(rng)
    body = float(rng.choice((8.5, 9.0, 9.5, 10.0)))
    if role == "invoice":
        out.append(_text(_MARGIN, 60, 16, seller.name, page_h, bold=True))
        for i, line in enumerate(seller.address):
            out.append(_text(_MARGIN, 78 + 12 * i, body, line, page_h))
        if "header_right" in free:
            out.append(_text(380, 60, 18, "INVOICE", page_h, bold=True))
            out.append(_text(380, 80, body, f"No. {wording.invoice_number(rng)}", page_h))
            out.append(_text(380, 94, body, f"Date {wording.date_text(rng)}", page_h))
        out.append(_text(_MARGIN, 160, body, "Bill to:", page_h, bold=True))
        out.append(_text(_MARGIN, 174, body, buyer.name, page_h))
        for i, line in enumerate(buyer.address):
            out.append(_text(_MARGIN, 188 + 12 * i, body, line, page_h))
        currency = str(rng.choice(("EUR", "USD", "CHF", "MXN")))
        items = wording.line_items(rng, int(rng.integers(3, 14)))
        out.append(_text(_MARGIN, 250, body, "Description", page_h, bold=True))
        out.append(_text(360, 250, body, "Qty", page_h, bold=True))
        out.append(_text(470, 250, body, "Amount", page_h, bold=True))
        out.append(
            b"0.4 w %s %s m %s %s l S\n"
            % (_num(_MARGIN), _num(page_h - 255), _num(547), _num(page_h - 255))
        )
        for i, item in enumerate(items):
            y = 270 + 20 * i
            out.append(_text(_MARGIN, y, body, item.description[:48], page_h))
            out.append(_text(360, y, body, str(item.quantity), page_h))
            out.append(_text(470, y, body, wording.money(item.amount, currency), page_h))
        total = sum(item.amount for item in items)
        out.append(_text(380, 580, body, f"Net {wording.money(total, currency)}", page_h))
        out.append(_text(380, 596, body, f"VAT {wording.money(total * 0.19, currency)}", page_h))
        out.append(
            _text(
                380, 614, body + 1, f"Total {wording.money(total * 1.19, currency)}", page_h, True
            )
        )
    else:
        title = "Terms and conditions" if role == "terms" else "Payment slip"
        out.append(_text(_MARGIN, 60, 14, title, page_h, bold=True))
        lines = wording.footer_lines(rng, 6) * 6
        for i, line in enumerate(lines[: int(rng.integers(12, 34))]):
            out.append(_text(_MARGIN, 90 + 14 * i, body, f"{i + 1}. {line[:55]}", page_h))
    footer_y = 822.0
    out.append(
        _text(
            _MARGIN, footer_y, 7.5, f"{seller.name} - page {page_index + 1} of {page_count}", page_h
        )
    )
    return b"".join(out)


def born_digital_pdf(
    seed: int,
    *,
    pages: int = 1,
    code_pages: Sequence[int] = (0,),
    codes_per_page: int = 1,
    code_as: str = "vector",
    side_mm: float | None = None,
    angle: float = 0.0,
    invert: bool = False,
    payload_kind: str | None = None,
    min_version: int | None = None,
) -> Sample:
    """A born-digital invoice of `pages` A4 pages, with `codes_per_page` codes on each page
    of `code_pages`. `side_mm` fixes each symbol's printed side (10 for a 1 cm code);
    None draws a realistic module of 0.5-0.85 mm. An "image" code is placed upright: a
    code turned by `angle` is drawn as vectors."""
    if not 1 <= pages <= 20:
        raise ValueError("a document has 1 to 20 pages")
    if any(not 0 <= p < pages for p in code_pages):
        raise ValueError(f"code pages {list(code_pages)} outside 0..{pages - 1}")
    if not 0 <= codes_per_page <= len(_SLOTS):
        raise ValueError(f"at most {len(_SLOTS)} codes fit on a page")
    if code_as not in ("vector", "image"):
        raise ValueError("code_as is 'vector' or 'image'")
    rng = np.random.default_rng([int(seed), _STREAM, 1])
    writer = _Writer()
    size = A4_POINTS
    truth: list[TruthCode] = []
    for index in range(pages):
        role = "invoice" if index == 0 else ("slip" if index == pages - 1 else "terms")
        count = codes_per_page if index in code_pages else 0
        slots = list(rng.permutation(list(_SLOTS))[:count]) if count else []
        drawing: list[bytes] = []
        images: dict[str, int] = {}
        for number, slot in enumerate(slots):
            payload = make_payload(rng, payload_kind)
            error = "m" if len(payload.data) > 200 else str(rng.choice(("l", "m", "q", "h")))
            symbol = make_symbol(
                payload.data,
                payload.is_text,
                error=error,
                min_version=min_version,
                mask=int(rng.integers(8)),
            )
            x0, y0, room = _SLOTS[slot]
            modules = symbol.symbol_size(border=0)[0]
            quiet = 4
            if side_mm is not None:
                module = side_mm / 25.4 * 72.0 / modules
            else:
                module = float(rng.uniform(0.5, 0.85)) / 25.4 * 72.0
            spread = abs(np.cos(np.deg2rad(angle % 90))) + abs(np.sin(np.deg2rad(angle % 90)))
            module = min(module, room / ((modules + 2 * quiet) * spread))
            if code_as == "vector" or angle:
                ops, corners = _symbol_drawing(symbol, (x0, y0), module, angle, size[1], invert)
                drawing.append(ops)
            else:
                ref, side_px = _symbol_image(writer, symbol, invert)
                name = f"Qr{number}"
                images[name] = ref
                side = side_px * module
                drawing.append(
                    b"q %s 0 0 %s %s %s cm /%s Do Q\n"
                    % (_num(side), _num(side), _num(x0), _num(size[1] - y0 - side), name.encode())
                )
                lo, hi = quiet * module, (quiet + modules) * module
                corners = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]]) + np.array([x0, y0])
            truth.append(
                TruthCode(
                    payload.data,
                    payload.is_text,
                    MICRO_QR_FORMAT if symbol.is_micro else QR_FORMAT,
                    to_quad(corners * TRUTH_DPI / 72.0),
                    index,
                )
            )
        free = set(_SLOTS) - set(slots)
        content = _page_content(rng, role, index, pages, size, free) + b"".join(drawing)
        writer.page(size, content, images)
    width, height = (round(v * TRUTH_DPI / 72.0) for v in size)
    return Sample(
        name=f"pdf-digital-{seed}",
        data=writer.finish(),
        fmt="pdf",
        pages=pages,
        width=width,
        height=height,
        codes=tuple(truth),
        category="digital",
        dpi=TRUTH_DPI,
    )


# --------------------------------------------------------------------------- scanned


def _image_xobject(
    writer: _Writer, image: npt.NDArray[np.uint8], encoding: str, quality: int
) -> int:
    """Embed `image` (gray or BGR) as a scanner would: the JPEG as is (DCTDecode), a
    thresholded CCITT G4 or 1-bit Flate bitonal scan, or 8-bit gray Flate."""
    height, width = image.shape[:2]
    pil = Image.fromarray(image if image.ndim == 2 else image[..., ::-1].copy())
    if encoding == "jpeg":
        buffer = io.BytesIO()
        pil.save(buffer, "JPEG", quality=quality)
        return _jpeg_xobject(writer, buffer.getvalue(), width, height, pil.mode)
    gray = np.asarray(pil.convert("L"))
    if encoding == "gray":
        return writer.stream(
            b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8" % (width, height),
            gray.tobytes(),
        )
    bits = gray >= 128
    if encoding == "bitonal":
        return writer.stream(
            b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
            b"/BitsPerComponent 1" % (width, height),
            np.packbits(bits, axis=1).tobytes(),
        )
    if encoding != "ccitt":
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {SCAN_ENCODINGS}")
    # libtiff's Group 4 coder (through Pillow), one strip: its data is the CCITT stream.
    tiff = io.BytesIO()
    Image.fromarray(bits).convert("1").save(
        tiff, "TIFF", compression="group4", tiffinfo={278: height}
    )
    parsed = Image.open(io.BytesIO(tiff.getvalue()))
    offset, length = parsed.tag_v2[273][0], parsed.tag_v2[279][0]
    data = tiff.getvalue()[offset : offset + length]
    # Pillow writes the TIFF as black-is-zero (photometric 1), and libtiff's coder then
    # codes 1 bits as CCITT's black runs: BlackIs1 (the default, false, shows a negative).
    return writer.stream(
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 1 /Filter /CCITTFaxDecode /DecodeParms << /K -1 /Columns %d "
        b"/Rows %d /BlackIs1 true >>" % (width, height, width, height),
        data,
        compress=False,
    )


def _jpeg_xobject(writer: _Writer, jpeg: bytes, width: int, height: int, mode: str) -> int:
    space = {"L": b"/DeviceGray", "RGB": b"/DeviceRGB", "CMYK": b"/DeviceCMYK"}[mode]
    return writer.stream(
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s "
        b"/BitsPerComponent 8 /Filter /DCTDecode" % (width, height, space),
        jpeg,
        compress=False,
    )


def _scan_page(
    writer: _Writer, ref: int, width: int, height: int, dpi: float
) -> tuple[float, float]:
    """A page exactly the image's size at `dpi`, the image covering it."""
    size = (width * 72.0 / dpi, height * 72.0 / dpi)
    content = b"q %s 0 0 %s 0 0 cm /Scan Do Q\n" % (_num(size[0]), _num(size[1]))
    writer.page(size, content, {"Scan": ref})
    return size


def scanned_pdf(
    seed: int,
    *,
    pages: int = 1,
    code_pages: Sequence[int] = (0,),
    dpi: float = 300.0,
    encoding: str = "jpeg",
    strength: float = 0.25,
    quality: int = 85,
) -> Sample:
    """A scanned invoice: every page an invoice rendered at `dpi` with a scanner's light
    degradations, one image covering the page; one code on each page of `code_pages`."""
    if not 200.0 <= dpi <= 300.0:
        raise ValueError("scanners write 200 to 300 DPI here")
    if any(not 0 <= p < pages for p in code_pages):
        raise ValueError(f"code pages {list(code_pages)} outside 0..{pages - 1}")
    rng = np.random.default_rng([int(seed), _STREAM, 2])
    writer = _Writer()
    truth: list[TruthCode] = []
    width = height = 0
    for index in range(pages):
        specs = [CodeSpec(make_payload(rng))] if index in code_pages else []
        page = render_invoice(rng, specs, dpi=dpi, page_index=index, page_count=pages)
        image, quads = degrade(
            page.image, as_quads([c.quad for c in page.codes]), rng, _SCAN_DEGRADATIONS, strength
        )
        ref = _image_xobject(writer, image, encoding, quality)
        h, w = image.shape[:2]
        _scan_page(writer, ref, w, h, dpi)
        if index == 0:
            width, height = round(w * TRUTH_DPI / dpi), round(h * TRUTH_DPI / dpi)
        for code, quad in zip(page.codes, quads, strict=True):
            truth.append(
                TruthCode(
                    code.payload,
                    code.is_text,
                    code.format,
                    to_quad(np.asarray(quad) * TRUTH_DPI / dpi),
                    index,
                )
            )
    return Sample(
        name=f"pdf-scanned-{seed}",
        data=writer.finish(),
        fmt="pdf",
        pages=pages,
        width=width,
        height=height,
        codes=tuple(truth),
        category="scanned",
        dpi=TRUTH_DPI,
    )


def scanned_from_sample(sample: Sample, *, dpi: float = 300.0, encoding: str = "gray") -> Sample:
    """`sample` (one page) as a scanned PDF: its image covering a page at `dpi`. A JPEG
    sample is embedded byte for byte (DCTDecode); any other is decoded and embedded as
    `encoding` ("gray", "bitonal" or "ccitt")."""
    if sample.pages != 1 or sample.fmt == "pdf":
        raise ValueError("only one-page image samples are wrapped")
    writer = _Writer()
    with Image.open(io.BytesIO(sample.data)) as opened:
        width, height = opened.size
        if sample.fmt == "jpeg":
            ref = _jpeg_xobject(writer, sample.data, width, height, opened.mode)
        else:
            gray = np.asarray(opened.convert("L"))
            ref = _image_xobject(writer, gray, encoding, 90)
    _scan_page(writer, ref, width, height, dpi)
    factor = TRUTH_DPI / dpi
    codes = tuple(
        dataclasses.replace(code, quad=to_quad(np.asarray(code.quad) * factor))
        for code in sample.codes
    )
    return dataclasses.replace(
        sample,
        name=f"{sample.name}-pdf",
        data=writer.finish(),
        fmt="pdf",
        width=round(width * factor),
        height=round(height * factor),
        codes=codes,
        dpi=TRUTH_DPI,
    )


# --------------------------------------------------------------------------- sets


def pdf_set(seed: int, count: int, kind: str) -> list[Sample]:
    """`count` varied PDFs of `kind` ("pdf_digital" or "pdf_scanned"): 1-3 pages, the code
    on the first, a middle or the last page, about one in six with codes on two pages."""
    if kind not in PDF_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {PDF_KINDS}")
    samples = []
    for index in range(count):
        rng = np.random.default_rng([int(seed), _STREAM, 3, index])
        pages = int(rng.choice((1, 2, 3), p=(0.5, 0.3, 0.2)))
        code_pages = _code_pages(rng, pages)
        item_seed = int(rng.integers(2**31))
        if kind == "pdf_digital":
            small = rng.random() < 0.1
            sample = born_digital_pdf(
                item_seed,
                pages=pages,
                code_pages=code_pages,
                codes_per_page=int(rng.choice((1, 2), p=(0.85, 0.15))),
                code_as="image" if rng.random() < 0.2 else "vector",
                side_mm=10.0 if small else None,
                angle=float(rng.choice((0.0, 0.0, 0.0, 90.0, 180.0, float(rng.uniform(-8, 8))))),
                payload_kind="tax_url" if small else None,
            )
        else:
            sample = scanned_pdf(
                item_seed,
                pages=pages,
                code_pages=code_pages,
                dpi=float(rng.choice((200.0, 240.0, 300.0))),
                encoding=str(rng.choice(SCAN_ENCODINGS, p=(0.6, 0.15, 0.1, 0.15))),
                strength=float(rng.uniform(0.1, 0.4)),
            )
        samples.append(dataclasses.replace(sample, name=f"{seed}-{index:04d}-{kind}"))
    return samples


def _code_pages(rng: np.random.Generator, pages: int) -> tuple[int, ...]:
    where = int(rng.integers(pages))  # first, a middle or the last page
    if pages > 1 and rng.random() < 0.17:
        other = int(rng.choice([p for p in range(pages) if p != where]))
        return tuple(sorted((where, other)))
    return (where,)


def any_sample_set(seed: int, count: int, kind: str) -> list[Sample]:
    """models.synth's sample sets, PDF kinds included (`python -m models.synth --kind`)."""
    return pdf_set(seed, count, kind) if kind in PDF_KINDS else sample_set(seed, count, kind)
