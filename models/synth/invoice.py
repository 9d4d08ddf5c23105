"""Render an invoice-like page and place QR codes on it with exact ground truth.

The page is laid out in horizontal bands (header, addresses, item table,
totals, footer).  Codes go into reserved slots where real invoices put them,
and the item table absorbs whatever height is left, so codes never overlap
text and always keep their quiet zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import segno

from . import wording
from .geometry import Quad, Quads, apply_affine, as_quads, rot90_quads, rotation_matrix, to_quad
from .payloads import Payload
from .qrcodes import make_symbol, rasterize

PAPER_MM: dict[str, tuple[float, float]] = {
    "a4": (210.0, 297.0),
    "letter": (215.9, 279.4),
    "a5": (148.0, 210.0),
}
SLOTS: tuple[str, ...] = ("footer_right", "totals", "header", "footer_left")
# Bottom-right is by far the most common spot on real invoices.
_SLOT_WEIGHTS = np.array([0.45, 0.25, 0.18, 0.12])
_DENSE_MODULES = 77  # version 15 and up: print smaller modules, like real issuers do
_MAX_CODE_WIDTH = 0.45  # of the text column, so totals and footer text keep room

Image = npt.NDArray[np.uint8]
Color = tuple[int, int, int]


@dataclass(frozen=True)
class PageGeometry:
    width: int
    height: int
    dpi: float


def page_geometry(
    paper: str = "a4", *, dpi: float | None = None, megapixels: float | None = None
) -> PageGeometry:
    """Pixel size of a portrait page given either a DPI or a target pixel count."""
    if dpi is not None and megapixels is not None:
        raise ValueError("give dpi or megapixels, not both")
    try:
        w_mm, h_mm = PAPER_MM[paper]
    except KeyError:
        raise ValueError(f"unknown paper {paper!r}; expected one of {sorted(PAPER_MM)}") from None
    area_in2 = (w_mm / 25.4) * (h_mm / 25.4)
    if megapixels is not None:
        dpi = float(np.sqrt(megapixels * 1e6 / area_in2))
    elif dpi is None:
        dpi = 150.0
    if not 40.0 <= dpi <= 600.0:
        raise ValueError(f"{dpi:.0f} DPI is outside the supported 40-600 range")
    return PageGeometry(round(w_mm / 25.4 * dpi), round(h_mm / 25.4 * dpi), dpi)


@dataclass(frozen=True)
class CodeSpec:
    """What to print; where and how large is decided by the layout."""

    payload: Payload
    micro: bool = False
    error: str = "m"
    min_version: int | None = None
    angle: float = 0.0
    """Counter-clockwise rotation of the symbol on the page, in degrees."""
    invert: bool = False
    """Light modules on a dark panel."""
    module_mm: float | None = None
    """Printed module size; None draws a realistic 0.5-0.85 mm."""
    slot: str | None = None
    """One of SLOTS; None picks a free one at random."""


@dataclass(frozen=True)
class PlacedCode:
    payload: bytes
    is_text: bool
    format: str
    quad: Quad
    version: str
    module_px: int


@dataclass(frozen=True)
class InvoicePage:
    image: Image
    """Grayscale (H, W) or BGR (H, W, 3) uint8."""
    codes: tuple[PlacedCode, ...]
    dpi: float


@dataclass(frozen=True)
class _Tile:
    spec: CodeSpec
    symbol: segno.QRCode
    image: Image
    quad: Quads  # (1, 4, 2), tile coordinates
    format: str
    version: str
    module_px: int


@dataclass(frozen=True)
class _Style:
    """Typography and spacing of one page, all in pixels."""

    dpi: float
    margin: int
    gap: int
    body_pt: float
    font: int
    bold_font: int
    accent: Color
    ruled_rows: bool
    header_fill: bool

    def px(self, pt: float) -> float:
        return pt * self.dpi / 72.0

    def line(self, pt: float) -> int:
        return round(self.px(pt) * 1.45)

    @property
    def thin(self) -> int:
        return max(1, round(self.dpi / 170.0))


def render_invoice(
    rng: np.random.Generator,
    codes: Sequence[CodeSpec] = (),
    *,
    paper: str = "a4",
    dpi: float | None = None,
    megapixels: float | None = None,
    color: bool = False,
    page_index: int = 0,
    page_count: int = 1,
) -> InvoicePage:
    """Draw one page with ``codes`` placed in distinct slots.

    Raises ValueError when more codes are asked for than there are slots, or
    when they cannot fit even with 2-pixel modules.
    """
    geometry = page_geometry(paper, dpi=dpi, megapixels=megapixels)
    slots = _assign_slots(rng, codes)
    style = _draw_style(rng, geometry.dpi)
    width, height = geometry.width, geometry.height
    text_width = width - 2 * style.margin
    tiles = {
        slot: _make_tile(rng, spec, geometry.dpi, round(text_width * _MAX_CODE_WIDTH))
        for slot, spec in zip(slots, codes, strict=True)
    }
    content = _draw_content(rng)
    bands = _fit_bands(style, height, content, tiles)

    shape = (height, width, 3) if color else (height, width)
    page = np.full(shape, 255, dtype=np.uint8)
    _draw_page(page, style, content, bands, tiles, page_index, page_count)

    placed = []
    for slot, spec in zip(slots, codes, strict=True):
        tile = tiles[slot]
        x, y = _slot_origin(slot, tile, bands, style, width, height)
        th, tw = tile.image.shape
        page[y : y + th, x : x + tw] = tile.image if page.ndim == 2 else tile.image[..., None]
        quad = tile.quad[0] + np.array([x, y], dtype=np.float64)
        placed.append(
            PlacedCode(
                payload=spec.payload.data,
                is_text=spec.payload.is_text,
                format=tile.format,
                quad=to_quad(quad),
                version=tile.version,
                module_px=tile.module_px,
            )
        )
    return InvoicePage(page, tuple(placed), geometry.dpi)


# --- codes -----------------------------------------------------------------------------------


def _assign_slots(rng: np.random.Generator, codes: Sequence[CodeSpec]) -> list[str]:
    if len(codes) > len(SLOTS):
        raise ValueError(f"at most {len(SLOTS)} codes fit on one page, got {len(codes)}")
    taken = {spec.slot for spec in codes if spec.slot is not None}
    if unknown := taken - set(SLOTS):
        raise ValueError(f"unknown slot(s) {sorted(unknown)}; expected {SLOTS}")
    if len(taken) != sum(spec.slot is not None for spec in codes):
        raise ValueError("two codes were given the same slot")
    slots = []
    for spec in codes:
        if spec.slot is not None:
            slots.append(spec.slot)
            continue
        free = np.array([s not in taken for s in SLOTS])
        weights = _SLOT_WEIGHTS * free
        slot = SLOTS[int(rng.choice(len(SLOTS), p=weights / weights.sum()))]
        taken.add(slot)
        slots.append(slot)
    return slots


def _make_tile(rng: np.random.Generator, spec: CodeSpec, dpi: float, max_width: int) -> _Tile:
    payload = spec.payload
    mask = int(rng.integers(4 if spec.micro else 8))
    symbol = make_symbol(
        payload.data,
        payload.is_text,
        error=spec.error,
        min_version=spec.min_version,
        micro=spec.micro,
        mask=mask,
    )
    module_mm = spec.module_mm if spec.module_mm is not None else float(rng.uniform(0.5, 0.85))
    modules = symbol.symbol_size(border=0)[0]
    floor = 3 if modules >= _DENSE_MODULES else 4
    module_px = max(floor, round(module_mm * dpi / 25.4))
    # Shrink to the widest allowed tile, accounting for the rotated bounding box.
    quiet = 2 if symbol.is_micro else 4
    rad = np.deg2rad(spec.angle % 90.0)
    spread = abs(np.cos(rad)) + abs(np.sin(rad))
    fit = int(max_width / ((modules + 2 * quiet) * spread))
    module_px = min(module_px, fit)
    return _tile(spec, symbol, module_px)


def _tile(spec: CodeSpec, symbol: segno.QRCode, module_px: int) -> _Tile:
    if module_px < 2:
        raise ValueError("the code does not fit on the page even with 2-pixel modules")
    rendered = rasterize(symbol, module_px=module_px)
    image = 255 - rendered.image if spec.invert else rendered.image
    quad = as_quads(rendered.quad)
    turns = round(spec.angle / 90.0)
    residual = spec.angle - 90.0 * turns
    if turns % 4:
        quad = rot90_quads(quad, image.shape[1], image.shape[0], turns)
        image = np.ascontiguousarray(np.rot90(image, turns))
    if abs(residual) > 1e-9:
        h, w = image.shape
        matrix, new_w, new_h = rotation_matrix(w, h, residual)
        image = cv2.warpAffine(
            image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderValue=255
        )
        quad = apply_affine(quad, matrix)
    return _Tile(spec, symbol, image, quad, rendered.format, rendered.version, module_px)


# --- layout ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Content:
    seller: wording.Party
    buyer: wording.Party
    number: str
    date: str
    due: str
    currency: str
    vat_rate: int
    items: tuple[wording.LineItem, ...]
    footer: tuple[str, ...]
    title: str
    logo: bool


@dataclass(frozen=True)
class _Bands:
    """Top edges (``*_y``) and sizes of the bands, in pixels."""

    meta_y: int
    table_y: int
    rows: int
    row_h: int
    totals_y: int
    footer_y: int
    footer_h: int


def _draw_style(rng: np.random.Generator, dpi: float) -> _Style:
    regular, bold = [
        (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX),
        (cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX),
    ][int(rng.integers(2))]
    hue = rng.integers(0, 256, size=3)
    accent = tuple(int(c) for c in (hue * 0.6))  # dark enough to read on white
    mm = dpi / 25.4
    return _Style(
        dpi=dpi,
        margin=round(rng.uniform(12.0, 20.0) * mm),
        gap=round(rng.uniform(5.0, 9.0) * mm),
        body_pt=float(rng.uniform(8.5, 10.5)),
        font=regular,
        bold_font=bold,
        accent=(accent[0], accent[1], accent[2]),
        ruled_rows=bool(rng.random() < 0.6),
        header_fill=bool(rng.random() < 0.7),
    )


def _draw_content(rng: np.random.Generator) -> _Content:
    currency = wording.CURRENCIES[int(rng.integers(len(wording.CURRENCIES)))]
    return _Content(
        seller=wording.party(rng),
        buyer=wording.party(rng),
        number=wording.invoice_number(rng),
        date=wording.date_text(rng),
        due=wording.date_text(rng),
        currency=currency,
        vat_rate=int(rng.choice((0, 7, 10, 16, 19, 20, 21, 23))),
        items=tuple(wording.line_items(rng, int(rng.integers(3, 16)))),
        footer=tuple(wording.footer_lines(rng, int(rng.integers(2, 4)))),
        title=str(rng.choice(("INVOICE", "Invoice", "TAX INVOICE", "Rechnung", "Factura"))),
        logo=bool(rng.random() < 0.8),
    )


def _fit_bands(style: _Style, height: int, content: _Content, tiles: dict[str, _Tile]) -> _Bands:
    """Stack the bands top to bottom.

    While not even one table row fits, the tallest code loses a pixel per
    module (``tiles`` is updated in place), so big symbols on small pages
    degrade gracefully instead of overlapping the text.
    """
    while True:
        bands = _stack_bands(style, height, content, tiles)
        if bands.rows >= 1:
            return bands
        if not tiles:
            raise ValueError("the page is too small for an invoice layout")
        slot = max(tiles, key=lambda s: tiles[s].image.shape[0])
        tile = tiles[slot]
        tiles[slot] = _tile(tile.spec, tile.symbol, tile.module_px - 1)


def _stack_bands(style: _Style, height: int, content: _Content, tiles: dict[str, _Tile]) -> _Bands:
    body = style.line(style.body_pt)
    small = style.line(style.body_pt * 0.85)

    def code_h(slot: str) -> int:
        return tiles[slot].image.shape[0] if slot in tiles else 0

    header_text = max(
        round(style.px(style.body_pt * 1.6) * 1.5) + 3 * small,
        round(style.px(style.body_pt * 2.4) * 1.4) + 2 * body,
    )
    header_h = max(header_text, code_h("header"))
    meta_y = style.margin + header_h + style.gap
    # The title moves down here when a code takes its place in the header.
    meta_lines = 5 + (2 if "header" in tiles else 0)
    table_y = meta_y + meta_lines * body + style.gap
    row_h = round(body * 1.35)
    totals_h = max(4 * round(body * 1.2), code_h("totals"))
    footer_text = (len(content.footer) + 1) * small
    footer_h = max(footer_text, code_h("footer_left"), code_h("footer_right"))
    footer_y = height - style.margin - footer_h
    room = footer_y - style.gap - totals_h - style.gap - table_y - row_h
    rows = min(len(content.items), room // row_h)
    totals_y = table_y + (rows + 1) * row_h + style.gap
    return _Bands(meta_y, table_y, rows, row_h, totals_y, footer_y, footer_h)


def _slot_origin(
    slot: str, tile: _Tile, bands: _Bands, style: _Style, width: int, height: int
) -> tuple[int, int]:
    th, tw = tile.image.shape
    right = width - style.margin - tw
    bottom = height - style.margin - th
    return {
        "header": (right, style.margin),
        "totals": (style.margin, bands.totals_y),
        "footer_left": (style.margin, bottom),
        "footer_right": (right, bottom),
    }[slot]


# --- drawing ---------------------------------------------------------------------------------


def _ink(page: Image, color: Color | int) -> Color | int:
    if isinstance(color, int):
        return color if page.ndim == 2 else (color, color, color)
    if page.ndim == 2:
        b, g, r = color
        return round(0.114 * b + 0.587 * g + 0.299 * r)
    return color


def _scale(style: _Style, pt: float) -> float:
    # Capitals are about 20 px tall at scale 1, both in the Hershey fonts and
    # in the outline fonts OpenCV 5 draws for the same ids; a typeface's cap
    # height is roughly 0.7 of its point size.
    return style.px(pt) * 0.7 / 20.0


def _text(
    page: Image,
    style: _Style,
    text: str,
    x: int,
    top: int,
    pt: float,
    *,
    bold: bool = False,
    align: str = "left",
    max_width: int | None = None,
    color: Color | int = 20,
) -> None:
    font = style.bold_font if bold else style.font
    scale = _scale(style, pt)
    thickness = max(1, round(style.px(pt) / 28.0))
    size = cv2.getTextSize(text, font, scale, thickness)[0][0]
    while max_width is not None and size > max_width and len(text) > 1:
        text = text[: max(1, len(text) * max_width // size - 1)]
        size = cv2.getTextSize(text, font, scale, thickness)[0][0]
    if max_width is not None and size > max_width:
        return
    if align == "right":
        x -= size
    elif align == "center":
        x -= size // 2
    baseline = top + round(style.px(pt) * 0.72)
    cv2.putText(page, text, (x, baseline), font, scale, _ink(page, color), thickness, cv2.LINE_AA)


def _rule(page: Image, style: _Style, x0: int, x1: int, y: int, weight: int = 1) -> None:
    cv2.rectangle(page, (x0, y), (x1, y + style.thin * weight - 1), _ink(page, 90), cv2.FILLED)


def _draw_page(
    page: Image,
    style: _Style,
    content: _Content,
    bands: _Bands,
    tiles: dict[str, _Tile],
    page_index: int,
    page_count: int,
) -> None:
    _draw_header(page, style, content, tiles)
    _draw_meta(page, style, content, bands, "header" in tiles)
    items = _draw_table(page, style, content, bands)
    _draw_totals(page, style, content, bands, items, "totals" in tiles)
    _draw_footer(page, style, content, bands, tiles, page_index, page_count)


def _draw_header(page: Image, style: _Style, content: _Content, tiles: dict[str, _Tile]) -> None:
    width = page.shape[1]
    m, pt = style.margin, style.body_pt
    x = m
    if content.logo:
        side = round(style.px(pt * 4.2))
        cv2.rectangle(page, (m, m), (m + side, m + side), _ink(page, style.accent), cv2.FILLED)
        initials = "".join(w[0] for w in content.seller.name.split()[:2]).upper()
        _text(
            page,
            style,
            initials,
            m + side // 2,
            m + side // 3,
            pt * 1.6,
            bold=True,
            align="center",
            color=255,
        )
        x = m + side + style.gap // 2
    right_limit = (
        width - m - (tiles["header"].image.shape[1] + style.gap if "header" in tiles else 0)
    )
    name_pt = pt * 1.6
    _text(page, style, content.seller.name, x, m, name_pt, bold=True, max_width=right_limit - x)
    y = m + round(style.px(name_pt) * 1.5)
    small = style.line(pt * 0.85)
    for line in content.seller.address:
        _text(page, style, line, x, y, pt * 0.85, max_width=right_limit - x, color=70)
        y += small
    if "header" not in tiles:
        title_pt = pt * 2.4
        _text(
            page,
            style,
            content.title,
            width - m,
            m,
            title_pt,
            bold=True,
            align="right",
            color=style.accent,
        )
        y = m + round(style.px(title_pt) * 1.4)
        _text(page, style, f"No. {content.number}", width - m, y, pt, align="right")
        _text(page, style, content.date, width - m, y + style.line(pt), pt, align="right")


def _draw_meta(
    page: Image, style: _Style, content: _Content, bands: _Bands, title_here: bool
) -> None:
    width = page.shape[1]
    m, pt = style.margin, style.body_pt
    line = style.line(pt)
    y = bands.meta_y
    _text(page, style, "Bill to:", m, y, pt * 0.85, color=90)
    _text(page, style, content.buyer.name, m, y + line, pt, bold=True, max_width=width // 2 - m)
    for i, row in enumerate(content.buyer.address):
        _text(page, style, row, m, y + (i + 2) * line, pt, max_width=width // 2 - m)
    if title_here:
        _text(
            page,
            style,
            content.title,
            width - m,
            y,
            pt * 1.8,
            bold=True,
            align="right",
            color=style.accent,
        )
        y += 2 * line
    details = (
        ("Invoice no.", content.number),
        ("Date", content.date),
        ("Due date", content.due),
        ("Currency", content.currency),
    )
    label_x = width - m - round(style.px(pt * 22))
    for i, (label, value) in enumerate(details):
        _text(page, style, f"{label}:", label_x, y + i * line, pt, color=90)
        _text(page, style, value, width - m, y + i * line, pt, align="right")


def _draw_table(
    page: Image, style: _Style, content: _Content, bands: _Bands
) -> list[wording.LineItem]:
    width = page.shape[1]
    m, pt = style.margin, style.body_pt
    left, right = m, width - m
    span = right - left
    cols = (left + round(0.62 * span), left + round(0.8 * span), right)
    pad = round(style.px(pt * 0.5))
    text_top = (bands.row_h - round(style.px(pt) * 0.72)) // 2
    y = bands.table_y
    if style.header_fill:
        cv2.rectangle(page, (left, y), (right, y + bands.row_h), _ink(page, 232), cv2.FILLED)
    for label, x, align in (
        ("Description", left + pad, "left"),
        ("Qty", cols[0], "right"),
        ("Unit price", cols[1], "right"),
        ("Amount", cols[2] - pad, "right"),
    ):
        _text(page, style, label, x, y + text_top, pt, bold=True, align=align)
    _rule(page, style, left, right, y + bands.row_h, weight=2)
    items = list(content.items[: bands.rows])
    for i, item in enumerate(items):
        y = bands.table_y + (i + 1) * bands.row_h
        top = y + text_top
        _text(
            page, style, item.description, left + pad, top, pt, max_width=cols[0] - left - 6 * pad
        )
        _text(page, style, str(item.quantity), cols[0], top, pt, align="right")
        _text(page, style, f"{item.unit_price:,.2f}", cols[1], top, pt, align="right")
        _text(page, style, f"{item.amount:,.2f}", cols[2] - pad, top, pt, align="right")
        if style.ruled_rows or i == len(items) - 1:
            _rule(page, style, left, right, y + bands.row_h, weight=2 if i == len(items) - 1 else 1)
    return items


def _draw_totals(
    page: Image,
    style: _Style,
    content: _Content,
    bands: _Bands,
    items: list[wording.LineItem],
    code_here: bool,
) -> None:
    width = page.shape[1]
    m, pt = style.margin, style.body_pt
    line = round(style.line(pt) * 1.2)
    subtotal = round(sum(item.amount for item in items), 2)
    vat = round(subtotal * content.vat_rate / 100.0, 2)
    rows = (
        ("Subtotal", wording.money(subtotal, content.currency)),
        (f"VAT {content.vat_rate}%", wording.money(vat, content.currency)),
        ("Total", wording.money(subtotal + vat, content.currency)),
    )
    label_x = m + round(0.58 * (width - 2 * m))
    for i, (label, value) in enumerate(rows):
        y = bands.totals_y + i * line
        last = i == len(rows) - 1
        if last:
            _rule(page, style, label_x, width - m, y - line // 5)
        _text(page, style, label, label_x, y, pt * (1.15 if last else 1.0), bold=last)
        _text(
            page, style, value, width - m, y, pt * (1.15 if last else 1.0), bold=last, align="right"
        )
    if not code_here:
        notes = (f"Payment due: {content.due}", f"Reference: {content.number}")
        for i, note in enumerate(notes):
            _text(
                page,
                style,
                note,
                m,
                bands.totals_y + i * line,
                pt * 0.9,
                color=80,
                max_width=label_x - 2 * m,
            )


def _draw_footer(
    page: Image,
    style: _Style,
    content: _Content,
    bands: _Bands,
    tiles: dict[str, _Tile],
    page_index: int,
    page_count: int,
) -> None:
    width = page.shape[1]
    m, pt = style.margin, style.body_pt * 0.85
    left = m + (
        tiles["footer_left"].image.shape[1] + style.gap // 2 if "footer_left" in tiles else 0
    )
    right = (
        width
        - m
        - (tiles["footer_right"].image.shape[1] + style.gap // 2 if "footer_right" in tiles else 0)
    )
    _rule(page, style, m, width - m, bands.footer_y - style.gap // 2)
    lines = list(content.footer)
    if page_count > 1:
        lines.append(f"Page {page_index + 1} of {page_count}")
    y = bands.footer_y + max(0, bands.footer_h - len(lines) * style.line(pt)) // 2
    for line in lines:
        if right - left > 0:
            _text(page, style, line, left, y, pt, color=90, max_width=right - left)
        y += style.line(pt)
