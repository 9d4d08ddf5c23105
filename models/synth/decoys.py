"""Things on an invoice that look like a code but are not a QR code.

A reader is scored on pages without QR codes too, and the pages that tempt it
are the useful ones: linear barcodes, other 2-D symbologies (Data Matrix,
Aztec, PDF417), blocky logos, a mock QR with finder patterns but no valid
data, ruled tables, stamps and halftone screens.  Each decoy is drawn into a
box on the page where a code would otherwise sit, so the layout stays real.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import zxingcpp

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1
Decoy = Callable[[Image, Box, np.random.Generator], None]

_INK = 25


def _put(page: Image, box: Box, symbol: Image) -> None:
    """Paste a grayscale drawing centred in ``box``, shrunk (never grown) to fit."""
    x0, y0, x1, y1 = box
    h, w = symbol.shape
    factor = min((x1 - x0) / w, (y1 - y0) / h, 1.0)
    if factor < 1.0:
        symbol = cv2.resize(
            symbol, (max(1, int(w * factor)), max(1, int(h * factor))), interpolation=cv2.INTER_AREA
        )
        h, w = symbol.shape
    x, y = x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 - h) // 2
    target = page[y : y + h, x : x + w]
    target[...] = symbol if page.ndim == 2 else symbol[..., None]


def _blank(box: Box) -> Image:
    x0, y0, x1, y1 = box
    return np.full((y1 - y0, x1 - x0), 255, np.uint8)


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


def _zxing(content: str, fmt: zxingcpp.BarcodeFormat) -> Image:
    barcode = zxingcpp.create_barcode(content, fmt)
    return np.asarray(zxingcpp.write_barcode_to_image(barcode, scale=1), np.uint8)


def _module_px(box: Box, modules: int, rng: np.random.Generator) -> int:
    room = min(box[2] - box[0], box[3] - box[1])
    return max(2, min(int(rng.integers(2, 6)), room // max(1, modules)))


# --- decoys ------------------------------------------------------------------------------------


def linear_barcode(page: Image, box: Box, rng: np.random.Generator) -> None:
    """A shipping or article barcode with its digits printed underneath."""
    kind = int(rng.integers(4))
    if kind == 0:
        content, fmt = _digits(rng, 12), zxingcpp.BarcodeFormat.EAN13
    elif kind == 1:
        content, fmt = f"INV-{_digits(rng, 4)}-{_digits(rng, 5)}", zxingcpp.BarcodeFormat.Code128
    elif kind == 2:
        content, fmt = _digits(rng, 14), zxingcpp.BarcodeFormat.ITF
    else:
        content, fmt = f"ACME {_digits(rng, 6)}", zxingcpp.BarcodeFormat.Code39
    bars = _zxing(content, fmt)[:1]  # one row: the bars are the same all the way down
    x0, y0, x1, y1 = box
    width = x1 - x0
    scale = max(1, width // bars.shape[1])
    height = min(y1 - y0, round(width * rng.uniform(0.25, 0.45)))
    text_h = max(10, height // 6)
    drawn = cv2.resize(
        bars, (bars.shape[1] * scale, height - text_h), interpolation=cv2.INTER_NEAREST
    )
    canvas = np.full((height, drawn.shape[1]), 255, np.uint8)
    canvas[: drawn.shape[0]] = drawn
    font_scale = text_h / 30
    size = cv2.getTextSize(content, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0]
    origin = ((canvas.shape[1] - size[0]) // 2, height - 2)
    cv2.putText(canvas, content, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, _INK, 1, cv2.LINE_AA)
    _put(page, box, canvas)


def matrix_symbol(page: Image, box: Box, rng: np.random.Generator) -> None:
    """A Data Matrix, Aztec or PDF417 symbol: 2-D, dense, and not a QR code."""
    fmt = (
        zxingcpp.BarcodeFormat.DataMatrix,
        zxingcpp.BarcodeFormat.Aztec,
        zxingcpp.BarcodeFormat.PDF417,
    )[int(rng.integers(3))]
    content = f"LOT {_digits(rng, 6)} EXP 20{_digits(rng, 2)}-{int(rng.integers(1, 13)):02d}"
    if rng.random() < 0.5:
        content += f" REF {_digits(rng, int(rng.integers(8, 40)))}"
    symbol = _zxing(content, fmt)
    module = _module_px(box, max(symbol.shape), rng) if fmt != zxingcpp.BarcodeFormat.PDF417 else 2
    drawn = cv2.resize(
        symbol,
        (symbol.shape[1] * module, symbol.shape[0] * module),
        interpolation=cv2.INTER_NEAREST,
    )
    _put(page, box, drawn)


def finder_logo(page: Image, box: Box, rng: np.random.Generator) -> None:
    """A QR look-alike: three finder patterns around random modules that encode nothing.

    Some brands print such art as decoration; a detector fires on it, and a
    reader must not turn it into a payload.  The format and version areas are
    random too, so no decoder can get past the error correction.
    """
    size = int(rng.choice((21, 25, 29)))
    grid = rng.random((size, size)) < 0.5
    for r, c in ((0, 0), (0, size - 7), (size - 7, 0)):
        # Light separator first, then the finder itself, as in a real symbol.
        grid[max(0, r - 1) : r + 8, max(0, c - 1) : c + 8] = False
        grid[r : r + 7, c : c + 7] = _finder()
    modules = np.where(grid, np.uint8(_INK), np.uint8(255))
    modules = np.pad(modules, 4, constant_values=255)
    module = _module_px(box, size + 8, rng)
    _put(page, box, np.repeat(np.repeat(modules, module, axis=0), module, axis=1))


def _finder() -> npt.NDArray[np.bool_]:
    pattern = np.ones((7, 7), bool)
    pattern[1:6, 1:6] = False
    pattern[2:5, 2:5] = True
    return pattern


def mosaic_logo(page: Image, box: Box, rng: np.random.Generator) -> None:
    """A pixel-art company logo: a symmetric block pattern, dense like a code."""
    half = int(rng.integers(4, 9))
    left = rng.random((2 * half, half)) < rng.uniform(0.35, 0.6)
    grid = np.hstack([left, left[:, ::-1]])
    cells = np.where(grid, np.uint8(_INK), np.uint8(255))
    cell = max(3, min(box[2] - box[0], box[3] - box[1]) // (2 * half + 2))
    _put(page, box, np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1))


def ruled_table(page: Image, box: Box, rng: np.random.Generator) -> None:
    """A VAT breakdown: a tight grid of ruled cells full of digits."""
    canvas = _blank(box)
    h, w = canvas.shape
    rows, cols = int(rng.integers(4, 9)), int(rng.integers(3, 6))
    for r in range(rows + 1):
        y = min(h - 1, r * (h - 1) // rows)
        cv2.line(canvas, (0, y), (w - 1, y), _INK, 1)
    for c in range(cols + 1):
        x = min(w - 1, c * (w - 1) // cols)
        cv2.line(canvas, (x, 0), (x, h - 1), _INK, 1)
    cell_w, cell_h = w / cols, h / rows
    width_1, height_1 = cv2.getTextSize("999.99", cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0]
    font_scale = min(0.8 * cell_w / width_1, 0.6 * cell_h / height_1)
    headers = ("Rate", "Net", "VAT", "Gross", "Total")
    for r in range(rows):
        for c in range(cols):
            text = f"{rng.uniform(0, 999):.2f}" if r else headers[c]
            origin = (round(c * cell_w + 0.1 * cell_w), round((r + 0.8) * cell_h))
            cv2.putText(
                canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, _INK, 1, cv2.LINE_AA
            )
    _put(page, box, canvas)


def stamp(page: Image, box: Box, rng: np.random.Generator) -> None:
    """A round rubber stamp ("PAID") with a ring of text-like marks."""
    canvas = _blank(box)
    h, w = canvas.shape
    radius = min(h, w) // 2 - 2
    centre = (w // 2, h // 2)
    thick = max(1, radius // 18)
    cv2.circle(canvas, centre, radius, _INK + 40, thick, cv2.LINE_AA)
    cv2.circle(canvas, centre, round(radius * 0.72), _INK + 40, thick, cv2.LINE_AA)
    for angle in np.linspace(0, 2 * np.pi, 28, endpoint=False):
        r0, r1 = radius * 0.78, radius * 0.94
        a = angle + rng.uniform(-0.05, 0.05)
        p0 = (round(centre[0] + r0 * np.cos(a)), round(centre[1] + r0 * np.sin(a)))
        p1 = (round(centre[0] + r1 * np.cos(a)), round(centre[1] + r1 * np.sin(a)))
        cv2.line(canvas, p0, p1, _INK + 40, thick, cv2.LINE_AA)
    word = str(rng.choice(("PAID", "BEZAHLT", "PAGADO", "COPY")))
    font_scale = radius / 70
    size = cv2.getTextSize(word, cv2.FONT_HERSHEY_DUPLEX, font_scale, thick)[0]
    origin = (centre[0] - size[0] // 2, centre[1] + size[1] // 2)
    cv2.putText(
        canvas, word, origin, cv2.FONT_HERSHEY_DUPLEX, font_scale, _INK + 40, thick, cv2.LINE_AA
    )
    _put(page, box, canvas)


def halftone(page: Image, box: Box, rng: np.random.Generator) -> None:
    """A screened photo or security tint: a regular dot grid of varying size."""
    canvas = _blank(box)
    h, w = canvas.shape
    pitch = int(rng.integers(4, 9))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tone = cv2.resize(rng.random((4, 4)).astype(np.float32), (w, h))
    cell_x = (xs % pitch) - pitch / 2
    cell_y = (ys % pitch) - pitch / 2
    dots = np.hypot(cell_x, cell_y) < tone * pitch * 0.6
    canvas[dots] = _INK
    _put(page, box, canvas)


DECOYS: dict[str, Decoy] = {
    "linear_barcode": linear_barcode,
    "matrix_symbol": matrix_symbol,
    "finder_logo": finder_logo,
    "mosaic_logo": mosaic_logo,
    "ruled_table": ruled_table,
    "stamp": stamp,
    "halftone": halftone,
}


def draw_decoy(page: Image, box: Box, rng: np.random.Generator, kind: str | None = None) -> str:
    """White out ``box`` and draw a decoy there (a random kind when None); returns its kind."""
    if kind is None:
        kind = list(DECOYS)[int(rng.integers(len(DECOYS)))]
    x0, y0, x1, y1 = box
    page[y0:y1, x0:x1] = 255
    DECOYS[kind](page, box, rng)
    return kind
