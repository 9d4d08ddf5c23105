"""Turning input bytes into grayscale pages, cheaply and safely.

Three rules shape this module:
- Sizes are read from the file header and checked against the settings *before* any
  pixel is decoded, so a decompression bomb is refused at the cost of a header parse.
- Pages are decoded lazily and at the resolution a stage asks for: the fast pass asks
  for a reduced page, and a JPEG is then decoded directly at 1/2, 1/4 or 1/8 size by
  libjpeg's DCT scaling, which is where most of the time of a scan would otherwise go.
- Every coordinate a stage reports is mapped back to the page's own pixel grid through
  the scale returned with each image.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from worker.engine.errors import ErrorCode, ScanFailed
from worker.settings import Settings

# Our own pixel limit (a setting) is checked at the same point Pillow's would be, with a
# message that names the setting; Pillow's fixed global limit would only second-guess it.
Image.MAX_IMAGE_PIXELS = None

# OpenCV reports corrupt files by returning None; its own console chatter adds nothing.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"%PDF-", 0, "pdf"),
    (b"WEBP", 8, "webp"),
)

# Formats OpenCV decodes straight from memory, faster than Pillow; the rest go through Pillow.
_CV2_FORMATS = frozenset({"jpeg", "png", "webp", "bmp"})
# Smallest reduction first: the fast pass wants the largest image that fits its budget.
_JPEG_REDUCTIONS = (
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
)


def sniff(data: bytes) -> str | None:
    """The container format from the leading magic bytes, or None."""
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if name == "webp" and data[:4] != b"RIFF":
                continue
            return name
    # PDFs produced by some scanners carry junk before the header; the spec allows 1 KiB.
    if b"%PDF-" in data[:1024]:
        return "pdf"
    return None


T = TypeVar("T")


@dataclass
class DecodeClock:
    """Time spent decoding pixels, kept apart from the time of the stages that asked."""

    ms: float = 0.0

    def timed(self, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.ms += (time.perf_counter() - start) * 1000.0


@dataclass
class Page:
    """One page of a document, decoded on demand at the resolutions stages ask for.

    `width` and `height` are the page's own pixel grid: the one every quad refers to.
    """

    index: int
    width: int
    height: int
    _render: Callable[[int | None], tuple[np.ndarray, float]]
    _cache: dict[int | None, tuple[np.ndarray, float]] = field(default_factory=dict)

    def gray(self, max_side: int | None = None) -> tuple[np.ndarray, float]:
        """The page as uint8 grayscale with its longer side at most `max_side`.

        Returns the image and its scale (image pixels per page pixel, at most 1).
        """
        if max_side is not None and max(self.width, self.height) <= max_side:
            max_side = None
        if max_side not in self._cache:
            self._cache[max_side] = self._render(max_side)
        return self._cache[max_side]


@dataclass
class Document:
    format: str
    pages: list[Page]
    clock: DecodeClock

    @property
    def width(self) -> int:
        return self.pages[0].width if self.pages else 0

    @property
    def height(self) -> int:
        return self.pages[0].height if self.pages else 0


def open_document(data: bytes, settings: Settings, clock: DecodeClock | None = None) -> Document:
    """Check `data` and prepare its pages; raises ScanFailed with a stable code."""
    clock = clock or DecodeClock()
    if not data:
        raise ScanFailed(ErrorCode.EMPTY_INPUT, "the input is empty (0 bytes)")
    if len(data) > settings.max_bytes:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"the input is {len(data)} bytes; the limit is {settings.max_bytes} (QRW_MAX_BYTES)",
        )
    fmt = sniff(data)
    if fmt is None:
        raise ScanFailed(
            ErrorCode.UNSUPPORTED_FORMAT,
            "not a supported image: expected JPEG, PNG, WebP, BMP, GIF, TIFF or PDF "
            f"(first bytes {data[:8].hex(' ')})",
        )
    if fmt == "pdf":
        return Document("pdf", _pdf_pages(data, settings, clock), clock)
    return Document(fmt, _raster_pages(data, fmt, settings, clock), clock)


def document_from_array(array: np.ndarray, settings: Settings) -> Document:
    """Wrap an already decoded image (grayscale, BGR or BGRA, uint8) as a one-page document."""
    if array.size == 0:
        raise ScanFailed(ErrorCode.EMPTY_INPUT, "the image array is empty")
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ScanFailed(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"expected a uint8 grayscale, BGR or BGRA array, got {array.dtype} {array.shape}",
        )
    height, width = array.shape[:2]
    _check_pixels(width, height, settings, what="the image")
    clock = DecodeClock()

    def full() -> np.ndarray:
        if array.ndim == 2:
            return np.ascontiguousarray(array)
        channels = array.shape[2]
        if channels == 1:
            return np.ascontiguousarray(array[:, :, 0])
        if channels == 4:
            return _flatten_alpha(array[:, :, :3], array[:, :, 3], bgr=True)
        return cv2.cvtColor(array, cv2.COLOR_BGR2GRAY)

    page = Page(0, width, height, _resizing(lambda: clock.timed(full), width, height, clock))
    return Document("array", [page], clock)


def _check_pixels(width: int, height: int, settings: Settings, *, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"{what} declares an empty size {width}x{height}")
    if width * height > settings.max_pixels:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{what} is {width}x{height} = {width * height} pixels; the limit is "
            f"{settings.max_pixels} (QRW_MAX_PIXELS)",
        )


def _raster_pages(data: bytes, fmt: str, settings: Settings, clock: DecodeClock) -> list[Page]:
    # Pillow parses headers lazily: opening reads sizes and frame tables, not pixels.
    try:
        image = Image.open(io.BytesIO(data))
        frames = getattr(image, "n_frames", 1) if fmt in ("gif", "tiff") else 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ScanFailed(
            ErrorCode.CORRUPT_IMAGE, f"the {fmt.upper()} header cannot be read: {exc}"
        ) from exc
    if frames > settings.max_pages:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"the {fmt.upper()} has {frames} pages; "
            f"the limit is {settings.max_pages} (QRW_MAX_PAGES)",
        )
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if fmt in _CV2_FORMATS and not has_alpha:
        width, height = image.size
        _check_pixels(width, height, settings, what=f"the {fmt.upper()}")
        return [Page(0, width, height, _cv2_renderer(data, fmt, width, height, clock))]
    return _pillow_pages(image, fmt, frames, settings, clock)


def _cv2_renderer(
    data: bytes, fmt: str, width: int, height: int, clock: DecodeClock
) -> Callable[[int | None], tuple[np.ndarray, float]]:
    buffer = np.frombuffer(data, np.uint8)

    def decode(flag: int) -> np.ndarray:
        image = cv2.imdecode(buffer, flag)
        if image is None or image.size == 0:
            raise ScanFailed(
                ErrorCode.CORRUPT_IMAGE,
                f"the {fmt.upper()} data is corrupt or truncated and cannot be decoded",
            )
        return image

    def full() -> np.ndarray:
        return clock.timed(lambda: decode(cv2.IMREAD_GRAYSCALE))

    resize = _resizing(full, width, height, clock)

    def render(max_side: int | None) -> tuple[np.ndarray, float]:
        if fmt == "jpeg" and max_side is not None:
            long_side = max(width, height)
            flag = next(
                (fl for f, fl in _JPEG_REDUCTIONS if long_side / f <= max_side),
                _JPEG_REDUCTIONS[-1][1],
            )
            image = clock.timed(lambda: decode(flag))
            if max(image.shape) > max_side:
                size = (
                    max(1, round(width * max_side / long_side)),
                    max(1, round(height * max_side / long_side)),
                )
                image = clock.timed(lambda: cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            return image, image.shape[1] / width
        return resize(max_side)

    return render


def _pillow_pages(
    image: Image.Image, fmt: str, frames: int, settings: Settings, clock: DecodeClock
) -> list[Page]:
    sizes: list[tuple[int, int]] = []
    try:
        for frame in ImageSequence.Iterator(image):
            sizes.append(frame.size)
            _check_pixels(*frame.size, settings, what=f"page {len(sizes)} of the {fmt.upper()}")
    except (OSError, ValueError, EOFError) as exc:
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"the {fmt.upper()} is corrupt: {exc}") from exc

    def frame_loader(index: int) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            try:
                image.seek(index)
                return _pil_to_gray(image)
            except (OSError, ValueError, EOFError, SyntaxError) as exc:
                raise ScanFailed(
                    ErrorCode.CORRUPT_IMAGE,
                    f"page {index + 1} of the {fmt.upper()} cannot be decoded: {exc}",
                ) from exc

        return lambda: clock.timed(load)

    return [
        Page(i, w, h, _resizing(frame_loader(i), w, h, clock)) for i, (w, h) in enumerate(sizes)
    ]


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        return _flatten_alpha(rgba[:, :, :3], rgba[:, :, 3], bgr=False)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float scans: stretch to 8 bits instead of clipping to white.
        wide = np.asarray(image, dtype=np.float32)
        low, high = float(wide.min()), float(wide.max())
        span = high - low or 1.0
        return ((wide - low) * (255.0 / span)).astype(np.uint8)
    return np.ascontiguousarray(np.asarray(image.convert("L")))


def _flatten_alpha(color: np.ndarray, alpha: np.ndarray, *, bgr: bool) -> np.ndarray:
    # A code drawn on a transparent background must land on white paper, not on black.
    code = cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY
    gray = cv2.cvtColor(np.ascontiguousarray(color), code).astype(np.uint16)
    a = alpha.astype(np.uint16)
    return ((gray * a + 255 * (255 - a)) // 255).astype(np.uint8)


def _resizing(
    full: Callable[[], np.ndarray], width: int, height: int, clock: DecodeClock
) -> Callable[[int | None], tuple[np.ndarray, float]]:
    cache: list[np.ndarray] = []

    def render(max_side: int | None) -> tuple[np.ndarray, float]:
        if not cache:
            cache.append(full())
        image = cache[0]
        if max_side is None:
            return image, 1.0
        small = clock.timed(lambda: _reduce(image, max_side))
        return small, small.shape[1] / width

    return render


def _reduce(image: np.ndarray, max_side: int) -> np.ndarray:
    # Halving with bilinear interpolation averages each 2x2 block, like INTER_AREA, at a
    # seventh of its cost. Up to three halvings mirror libjpeg's 1/2..1/8 DCT scaling;
    # anything needing more is resized in one step.
    if max(image.shape[:2]) <= max_side * 8:
        while max(image.shape[:2]) > max_side:
            height, width = image.shape[:2]
            image = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_LINEAR)
    if max(image.shape[:2]) > max_side:
        height, width = image.shape[:2]
        factor = max_side / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def _pdf_pages(data: bytes, settings: Settings, clock: DecodeClock) -> list[Page]:
    import pypdfium2 as pdfium  # only PDF inputs pay for loading PDFium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"the PDF cannot be opened: {exc}") from exc
    count = len(pdf)
    if count == 0:
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, "the PDF has no pages")
    if count > settings.max_pages:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"the PDF has {count} pages; the limit is {settings.max_pages} (QRW_MAX_PAGES)",
        )
    pages: list[Page] = []
    for index in range(count):
        points_w, points_h = pdf[index].get_size()
        if points_w <= 0 or points_h <= 0:
            raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} has no area")
        # Posters and drawings can be huge in points: lower the resolution to fit the pixel
        # budget rather than refuse a legitimate document.
        scale = min(settings.pdf_dpi / 72.0, math.sqrt(settings.max_pixels / (points_w * points_h)))
        width, height = math.floor(points_w * scale), math.floor(points_h * scale)
        pages.append(
            Page(index, width, height, _pdf_renderer(pdf, index, scale, width, height, clock))
        )
    return pages


def _pdf_renderer(
    pdf: object, index: int, scale: float, width: int, height: int, clock: DecodeClock
) -> Callable[[int | None], tuple[np.ndarray, float]]:
    import pypdfium2 as pdfium

    def render(max_side: int | None) -> tuple[np.ndarray, float]:
        # Rasterising at the reduced size is the PDF analogue of JPEG DCT scaling.
        factor = 1.0 if max_side is None else max_side / max(width, height)

        def draw() -> np.ndarray:
            try:
                bitmap = pdf[index].render(scale=scale * factor, grayscale=True)  # type: ignore[index]
                array = bitmap.to_numpy()
            except pdfium.PdfiumError as exc:
                raise ScanFailed(
                    ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} cannot be rendered: {exc}"
                ) from exc
            return np.ascontiguousarray(array if array.ndim == 2 else array[:, :, 0])

        image = clock.timed(draw)
        return image, image.shape[1] / width

    return render
