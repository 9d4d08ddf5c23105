"""Turning input bytes into grayscale pages, cheaply, safely and within a memory budget.

Four rules shape this module:
- Sizes are read from the file header and checked against the settings *before* any
  pixel is decoded, so a decompression bomb is refused at the cost of a header parse.
  Three limits apply: pixels per page (QRW_MAX_PIXELS), pages per document
  (QRW_MAX_PAGES; every frame of an animated GIF, PNG or WebP is a page) and pixels per
  document, all pages together (QRW_MAX_DOCUMENT_PIXELS). A header is not trusted
  beyond what the decoder will do with it: every frame of an animation is checked from
  its own descriptor (a GIF frame larger than its screen grows Pillow's canvas), and a
  JPEG's scans are counted (QRW_MAX_JPEG_SCANS), with the pixels they cover all together
  (QRW_MAX_JPEG_SCAN_PIXELS), since libjpeg decodes them all in one call that no deadline
  interrupts.
- Memory is budgeted per document, not per page. Only one page at a time keeps its large
  images: when a stage moves on to another page, the previous page's full-size and
  thorough-size copies are released and only its small fast-pass copy stays. Pillow
  frames are decoded from a fresh handle and converted to gray a band of rows at a time,
  so no full-size RGB/RGBA copy is made next to the decoded frame, and the decoder is
  gone before the stages work on the page. Each decoding path is charged the bytes per
  pixel its decoder really holds (an animated WebP keeps several RGBA canvases), and a
  page whose decoding would take more than PAGE_BYTES_PER_PIXEL bytes per pixel of
  QRW_MAX_PIXELS is refused from its header.
- Pages are decoded lazily and at the resolution a stage asks for: the fast pass asks
  for a reduced page, and a JPEG is then decoded directly at 1/2, 1/4 or 1/8 size by
  libjpeg's DCT scaling, which is where most of the time of a scan would otherwise go.
  The deadline is checked before each page and between the frames of an animation, and a
  JPEG of several scans is not decoded when its decode, predicted from its scans, would
  end past the deadline.
- Every coordinate a stage reports is mapped back to the page's own pixel grid through
  the scale returned with each image.
"""

from __future__ import annotations

import functools
import io
import math
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from worker.engine.deadline import Deadline
from worker.engine.errors import DeadlineReached, ErrorCode, ScanFailed
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
# Formats whose frames Pillow can only reach by decoding every frame before them.
_ANIMATED_FORMATS = frozenset({"gif", "png", "webp"})
# Smallest reduction first: the fast pass wants the largest image that fits its budget.
_JPEG_REDUCTIONS = (
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

# What one page may cost while it is decoded, in bytes per pixel of QRW_MAX_PIXELS: an
# RGBA PNG of the largest accepted size fits, an animated canvas of that size does not.
PAGE_BYTES_PER_PIXEL = 5.5
# Bytes per pixel each decoding path holds at its peak: the decoder's buffers, the gray
# page and the reduced copies derived from it (measured in a fresh process, as
# tests/test_engine_memory.py does). libjpeg, libpng and the BMP reader convert to gray
# row by row; OpenCV's WebP reader decodes to BGR first, and with alpha to a BGRA canvas
# that it then copies.
_GRAY_PATH_COST = 2.1
# A JPEG of several scans is not decoded row by row: libjpeg first gathers every scan into
# a buffer of the whole page's coefficients, 2 bytes for each pixel of each component's
# plane, with the gray page beside it. Measured at 60 MP (full decodes; 1/8 ones hold a
# byte less): gray 3.06, 4:2:0 colour 4.07, 4:4:4 7.07, CMYK 9.08 bytes per pixel.
_JPEG_COEFFICIENT_BYTES = 2.0
_JPEG_BUFFERED_PAGE_COST = 1.1
_WEBP_PATH_COST = 4.5
_WEBP_ALPHA_PATH_COST = 8.5
# Pillow keeps 1-bit, L and P frames in one byte per pixel, 16-bit ones in two, and
# everything else (RGB included) in four; the gray page and its copies add 1.3.
_PILLOW_STORAGE = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_PILLOW_GRAY_COST = 1.3
# Animations hold more than their frame: Pillow keeps GIF and APNG frames in RGBA with
# the previous one for disposal and blending, libwebp two canvases plus the copy it
# hands to Pillow; the walk that reaches a frame also makes the others' small copies.
_ANIMATION_COST = {"gif": 19.0, "png": 15.0, "webp": 19.5}
# Gray rows converted at once from a Pillow frame or a BGRA array: a few MB at most.
_BAND_ROWS = 64
# PNG chunks that decide the pixels: the critical ones, transparency, and APNG's frame
# chunks. The rest (text, ICC profiles, gamma, private data) is dropped before decoding:
# ancillary chunks cannot change what a code reads, and libpng's chunk size limit and
# Pillow's text limits would otherwise call a valid PNG corrupt because of one of them.
# Unknown critical chunks are kept, so a decoder still refuses what it cannot draw.
_PNG_PIXEL_CHUNKS = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"acTL", b"fcTL", b"fdAT"}
)
# Dropping means copying the file, so the common PNG (pHYs, gAMA, a short tEXt) is left
# as it is: up to this many ancillary bytes, far under libpng's chunk limit and Pillow's
# text limits, unless one of them is compressed and may inflate past those.
_PNG_ANCILLARY_LEFT = 64 * 1024
_PNG_COMPRESSED_CHUNKS = frozenset({b"zTXt", b"iTXt", b"iCCP"})
# JPEG markers: start-of-frame (all but DHT C4, JPG C8 and DAC CC), the progressive ones,
# and those that stand alone without a length (TEM, RST0-7, SOI).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
# The end of entropy-coded data: an 0xFF that is neither stuffing (FF 00), a restart
# marker (FF D0-D7) nor fill before a marker (FF FF).
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# What decoding a JPEG of several scans costs. libjpeg keeps the whole page's coefficients
# and each scan revisits every block of the components it holds, so the time grows with the
# pixels each scan covers, summed over the scans (JpegShape.scan_pixels); DCT scaling saves
# only the final inverse DCT, so a reduced decode costs the same. Measured here (libjpeg-turbo
# 3.1 in OpenCV 5.1, 60 MP pages, full and 1/8 decodes, machine idle to loaded): 0.6 to 1.0
# ns per pixel counted for libjpeg's own gray and colour (4:2:0, 4:4:4) scripts and for a
# blank page's last scan repeated 90 times (0.61 to 0.83), DC scans less (0.14 to 0.5);
# dense entropy-coded data adds about 20 ns per byte (96 scans over 16 MP in 35 MB: 1.6 s,
# blank 1.0 s). The prediction takes the top of that range: a decode it lets start ends
# about when it says or sooner, and one it refuses could not have ended in time.
JPEG_SCAN_NS_PER_PIXEL = 1.0
JPEG_DATA_NS_PER_BYTE = 20.0
# The small fast-pass copies that pages other than the current one keep, all together: 20
# pages at the default QRW_FAST_MAX_SIDE fit; past it, pages are decoded again when needed.
_KEPT_SMALL_BYTES = 64 * 2**20

# A frame's place on its canvas: x, y, width, height.
_Rect = tuple[int, int, int, int]
# Blocks or chunks a header walk steps over between two deadline checks (a few ms): a
# 50 MB file can hold millions of empty ones.
_WALK_CHECK_EVERY = 1 << 16


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


@dataclass(frozen=True)
class JpegShape:
    """What a JPEG's marker segments say, read without decoding: its frame size and
    components, whether it is progressive, and its scans (SOS segments)."""

    width: int
    height: int
    components: int
    progressive: bool
    scans: int
    # What libjpeg gathers before it decodes a JPEG of several scans (0 for one scan, which
    # is decoded row by row). The pixels the scans cover, summed over scans: each scan
    # counts every component it holds at that component's own size (a subsampled chroma
    # plane is a quarter of the page).
    scan_pixels: int = 0
    # The pixels of every component's plane together: 1.5 pages for 4:2:0 colour, 3 for 4:4:4.
    plane_pixels: int = 0


def jpeg_shape(data: bytes, max_scans: int | None = None) -> JpegShape:
    """Walk the JPEG's marker segments, skipping entropy-coded data, and count the scans
    libjpeg would decode.

    A sequential JPEG whose first scan holds every component (nearly every camera and
    scanner file) has one: the walk ends there. Otherwise (progressive, or one scan per
    component) every SOS segment counts, up to `max_scans + 1` when a limit is given, so
    a file of a million scans costs a walk of that many. A walk that meets something
    other than a marker (junk, truncation) stops there: what to make of a broken file is
    the decoder's call.
    """
    width = height = components = scans = 0
    progressive = False
    frame, held = b"", []  # the frame's component entries; the component ids of each scan
    end, pos = len(data), 2  # after SOI
    while pos + 1 < end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > end:
            break
        length = (data[pos + 2] << 8) | data[pos + 3]
        body, pos = pos + 4, pos + 2 + length
        if length < 2:
            break
        if marker in _JPEG_SOF and body + 6 <= end:
            height, width = struct.unpack_from(">HH", data, body + 1)
            components, progressive = data[body + 5], marker in _JPEG_PROGRESSIVE
            frame = data[body + 6 : min(pos, end)]
        elif marker == 0xDA:
            scans += 1
            if max_scans is not None and scans > max_scans:
                break
            if body < end:
                held.append(data[body + 1 : min(body + 1 + 2 * data[body], end) : 2])
            if not progressive and scans == 1 and body < end and data[body] >= components:
                # One sequential scan holding every component is the whole image: libjpeg
                # refuses or ignores any scan after it. Most JPEGs stop here, at the
                # cost of a header walk.
                break
            found = _JPEG_NEXT_MARKER.search(data, pos)
            pos = found.start() if found else end
    if scans <= 1:  # nearly every JPEG: nothing more to count
        return JpegShape(width, height, components, progressive, scans)
    planes = _jpeg_planes(frame, width, height)
    scan_pixels = sum(planes.get(component, 0) for ids in held for component in ids)
    plane_pixels = sum(planes.values())
    return JpegShape(width, height, components, progressive, scans, scan_pixels, plane_pixels)


def _jpeg_planes(spec: bytes, width: int, height: int) -> dict[int, int]:
    """Each component's plane size in pixels, from the frame header's component entries
    (id, sampling factors, table): a component sampled at h/hmax x v/vmax of the page."""
    entries = [spec[i : i + 3] for i in range(0, len(spec) - 2, 3)]
    factors = {entry[0]: (entry[1] >> 4, entry[1] & 15) for entry in entries}
    h_max = max((h for h, _ in factors.values()), default=1) or 1
    v_max = max((v for _, v in factors.values()), default=1) or 1
    return {
        component: -(-width * h // h_max) * -(-height * v // v_max)
        for component, (h, v) in factors.items()
    }


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
class _Pool:
    """What the pages of one document share: the clock, the deadline, the sizes the
    cascade asks for, and the rule that one page at a time keeps large images."""

    clock: DecodeClock
    deadline: Deadline | None
    sides: tuple[int, ...]
    small_pixels: int
    decoded_pixels: int = 0
    _current: dict[int | None, tuple[np.ndarray, float]] | None = None
    _kept: dict[int, int] = field(default_factory=dict)

    def enter(self, cache: dict[int | None, tuple[np.ndarray, float]]) -> None:
        """Make `cache` the page that may hold large images, releasing the previous one's.

        The pages left behind keep their small copies, up to _KEPT_SMALL_BYTES for the
        whole document. Only cache dicts are remembered, not pages: pages and the pool
        hold no reference cycle, so a finished document is freed at once, not by the
        collector.
        """
        previous = self._current
        if previous is not None and previous is not cache:
            kept = sum(self._kept.values()) - self._kept.pop(id(previous), 0)
            mine = 0
            for key in list(previous):
                image = previous[key][0]
                if image.size > self.small_pixels or kept + mine + image.nbytes > _KEPT_SMALL_BYTES:
                    del previous[key]
                else:
                    mine += image.nbytes
            self._kept[id(previous)] = mine
        self._current = cache

    def keep_room(self) -> bool:
        """Whether pages other than the current one may keep more small copies."""
        return sum(self._kept.values()) < _KEPT_SMALL_BYTES

    def kept_small(self, cache: dict[int | None, tuple[np.ndarray, float]], nbytes: int) -> None:
        """Count a small copy stored in a page other than the current one."""
        self._kept[id(cache)] = self._kept.get(id(cache), 0) + nbytes

    def check_deadline(self) -> None:
        if self.deadline is not None and self.deadline.expired():
            raise DeadlineReached(f"the deadline of {self.deadline.budget_ms:g} ms passed")

    def decode(self, fn: Callable[[], np.ndarray], predicted_ms: float = 0.0) -> np.ndarray:
        """Run the decode `fn`, unless the deadline has passed or the time left is shorter
        than `predicted_ms`: a decode is one C call, and one that cannot end in time is
        refused before it starts rather than let run past the deadline."""
        self.check_deadline()
        if self.deadline is not None and predicted_ms > self.deadline.remaining_ms():
            raise DeadlineReached(
                f"decoding the page would take about {predicted_ms:.0f} ms, and "
                f"{max(self.deadline.remaining_ms(), 0.0):.0f} ms of the deadline of "
                f"{self.deadline.budget_ms:g} ms are left"
            )
        image = self.clock.timed(fn)
        self.decoded_pixels += image.size
        return image


@dataclass
class Page:
    """One page of a document, decoded on demand at the resolutions stages ask for.

    `width` and `height` are the page's own pixel grid: the one every quad refers to.
    """

    index: int
    width: int
    height: int
    _decode: Callable[[], np.ndarray]
    _pool: _Pool
    # Straight to a reduced size (JPEG DCT scaling, PDF rasterising), when the format can.
    _decode_reduced: Callable[[int], np.ndarray] | None = None
    # What one decode is predicted to take, reduced or not, where a model says (a JPEG of
    # several scans); 0 where decoding is not refused ahead of the deadline.
    _decode_ms: float = 0.0
    _cache: dict[int | None, tuple[np.ndarray, float]] = field(default_factory=dict)
    # PDF pages (worker.engine.pdf): what the page is (worker.engine.pdf_pages: born_digital,
    # scanned or mixed), and for a scan read from its image, that image's size: the decoders
    # give the image's own pixels, and the scale each size comes with maps them onto the
    # page's grid (more than 1 for a scan finer than QRW_PDF_DPI).
    kind: str | None = None
    native: tuple[int, int] | None = None
    # A rendered PDF page: any box of it (page pixels) rendered alone at `factor` times the
    # page's resolution, with its left and top in pixels of the whole page at that factor.
    region: (
        Callable[[tuple[float, float, float, float], float], tuple[np.ndarray, float, float]] | None
    ) = None

    def gray(self, max_side: int | None = None) -> tuple[np.ndarray, float]:
        """The page as uint8 grayscale with its longer side at most `max_side`.

        Returns the image and its scale (image pixels per page pixel: at most 1, but for a
        scan read from a PDF at a finer resolution than its page's grid).
        Raises DeadlineReached when the page must be decoded after the deadline.
        """
        long_side = max(self.native or (self.width, self.height))
        key = _size_key(long_side, max_side)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        self._pool.enter(self._cache)
        if key is not None and self._decode_reduced is not None:
            side = key
            image = self._pool.decode(
                lambda: self._decode_reduced(side),  # type: ignore[misc]
                self._decode_ms,
            )
            self._cache[key] = (image, image.shape[1] / self.width)
            return self._cache[key]
        full = self._pool.decode(self._decode, self._decode_ms)
        # A page is decoded at full size only to be reduced: derive every size the cascade
        # asks for now, so the page is not decoded again, and keep the full page only
        # when it is itself one of those sizes.
        wanted = {key, *(_size_key(long_side, s) for s in self._pool.sides)}
        for side in sorted(wanted, key=lambda s: -1 if s is None else s):
            if side in self._cache:
                continue
            if side is None:
                self._cache[None] = (full, full.shape[1] / self.width)
            else:
                small = self._pool.clock.timed(lambda: _reduce(full, side))  # noqa: B023
                self._cache[side] = (small, small.shape[1] / self.width)
        return self._cache[key]


def _size_key(long_side: int, max_side: int | None) -> int | None:
    """The cache key of a page reduced to `max_side`: None when that is the page itself."""
    return None if max_side is None or long_side <= max_side else max_side


def _fast_key(width: int, height: int, settings: Settings) -> int | None:
    return _size_key(max(width, height), settings.fast_max_side)


@dataclass
class Document:
    format: str
    pages: list[Page]
    clock: DecodeClock
    _pool: _Pool | None = None

    @property
    def width(self) -> int:
        return self.pages[0].width if self.pages else 0

    @property
    def height(self) -> int:
        return self.pages[0].height if self.pages else 0

    @property
    def decoded_pixels(self) -> int:
        """Pixels decoded so far, every page and re-decode counted: what the scan cost."""
        return self._pool.decoded_pixels if self._pool else 0


def _pool(settings: Settings, clock: DecodeClock, deadline: Deadline | None) -> _Pool:
    sides = (settings.fast_max_side, settings.thorough_max_side)
    return _Pool(clock, deadline, sides, settings.fast_max_side**2)


def open_document(
    data: bytes,
    settings: Settings,
    clock: DecodeClock | None = None,
    deadline: Deadline | None = None,
) -> Document:
    """Check `data` and prepare its pages; raises ScanFailed with a stable code.

    With a `deadline`, decoding a page after it has passed raises DeadlineReached.
    """
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
    pool = _pool(settings, clock, deadline)
    if fmt == "pdf":
        from worker.engine.pdf import pdf_pages  # imports this module: loaded when needed

        return Document("pdf", pdf_pages(data, settings, pool), clock, pool)
    try:
        pages = _raster_pages(data, fmt, settings, pool)
    except DeadlineReached as exc:
        # Only a header walk over millions of blocks gets here, before any page exists.
        raise ScanFailed(
            ErrorCode.DEADLINE_EXCEEDED,
            f"{exc} while the {fmt.upper()}'s blocks were walked, before any code was read",
        ) from exc
    return Document(fmt, pages, clock, pool)


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
    _check_page(width, height, _GRAY_PATH_COST, settings, what="the image")
    clock = DecodeClock()

    def full() -> np.ndarray:
        if array.ndim == 2:
            return np.ascontiguousarray(array)
        channels = array.shape[2]
        if channels == 1:
            return np.ascontiguousarray(array[:, :, 0])
        if channels == 4:
            return _flatten_bands(array, bgr=True)
        return cv2.cvtColor(array, cv2.COLOR_BGR2GRAY)

    pool = _pool(settings, clock, None)
    return Document("array", [Page(0, width, height, full, pool)], clock, pool)


def _check_page(width: int, height: int, cost: float, settings: Settings, *, what: str) -> None:
    """Refuse a page larger than QRW_MAX_PIXELS, or one whose decoding path (`cost` bytes
    per pixel at its peak) would take more memory than a page may."""
    if width <= 0 or height <= 0:
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"{what} declares an empty size {width}x{height}")
    pixels = width * height
    if pixels > settings.max_pixels:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{what} is {width}x{height} = {pixels} pixels; the limit is "
            f"{settings.max_pixels} (QRW_MAX_PIXELS)",
        )
    budget = settings.max_pixels * PAGE_BYTES_PER_PIXEL
    if pixels * cost > budget:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{what} is {width}x{height} and decoding it holds {cost:g} bytes per pixel: "
            f"{pixels * cost / 2**20:.0f} MiB, more than the {budget / 2**20:.0f} MiB a page "
            f"may take ({PAGE_BYTES_PER_PIXEL:g} bytes per pixel of QRW_MAX_PIXELS)",
        )


def _check_document(sizes: list[tuple[int, int]], settings: Settings, *, what: str) -> None:
    total = sum(w * h for w, h in sizes)
    if total > settings.max_document_pixels:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{what} has {len(sizes)} pages of {total} pixels in all; the limit is "
            f"{settings.max_document_pixels} (QRW_MAX_DOCUMENT_PIXELS)",
        )


def _check_page_count(pages: int, settings: Settings, *, what: str, more: bool = False) -> None:
    if pages > settings.max_pages:
        count = f"more than {settings.max_pages}" if more else str(pages)
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{what} has {count} pages; the limit is {settings.max_pages} (QRW_MAX_PAGES)",
        )


def _corrupt(what: str, exc: BaseException) -> ScanFailed:
    return ScanFailed(ErrorCode.CORRUPT_IMAGE, f"{what} cannot be decoded: {exc}")


_PILLOW_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)


def _raster_pages(data: bytes, fmt: str, settings: Settings, pool: _Pool) -> list[Page]:
    name = f"the {fmt.upper()}"
    jpeg = _check_jpeg_scans(data, settings) if fmt == "jpeg" else None
    if fmt == "png":
        data, frames_at = _png_pixel_chunks(data, pool.check_deadline)
        _check_frames_inside(frames_at, _png_canvas(data), name)
    elif fmt == "webp":
        frames_at = _webp_frames(data, settings.max_pages + 1, pool.check_deadline)
        _check_frames_inside(frames_at, _webp_canvas(data), name)
    # Pillow parses headers lazily: opening reads sizes and frame tables, not pixels.
    try:
        with Image.open(io.BytesIO(data)) as image:
            frames, more = _frame_count(image, data, fmt, settings.max_pages, pool.check_deadline)
            _check_page_count(frames, settings, what=name, more=more)
            mode, size, info = image.mode, image.size, image.info
            # TIFF pages each have their own size and mode; reading an IFD decodes nothing.
            tiff_pages = [_tiff_page(image, i) for i in range(frames)] if fmt == "tiff" else []
    except ScanFailed:
        raise
    except _PILLOW_ERRORS as exc:
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"{name} header cannot be read: {exc}") from exc
    if fmt == "tiff":
        _check_document([s for s, _ in tiff_pages], settings, what=name)
        pages = []
        for index, ((width, height), page_mode) in enumerate(tiff_pages):
            what = f"page {index + 1} of {name}"
            _check_page(width, height, _pillow_cost(page_mode), settings, what=what)
            decode = _pillow_frame(data, index, what)
            pages.append(Page(index, width, height, decode, pool))
        return pages
    width, height = size
    if frames > 1 and fmt in _ANIMATED_FORMATS:
        # Every frame is a page the size of the canvas it is drawn on, reached by decoding
        # those before it. Each is checked before the document, so the message names the
        # frame that is too large.
        if fmt == "gif":
            sizes = _gif_sizes(data, frames, name, pool.check_deadline)
        else:
            sizes = [(size, f" of {name}")] * frames
        for index, ((page_width, page_height), what) in enumerate(sizes):
            cost = _ANIMATION_COST[fmt]
            _check_page(page_width, page_height, cost, settings, what=f"frame {index + 1}{what}")
        _check_document([page_size for page_size, _ in sizes], settings, what=name)
        keys = [_fast_key(w, h, settings) for (w, h), _ in sizes]
        animation = _Animation(data, name, pool, keys, [])
        pages = [
            Page(index, w, h, functools.partial(animation.frame, index), pool)
            for index, ((w, h), _) in enumerate(sizes)
        ]
        animation.caches = [page._cache for page in pages]
        return pages
    has_alpha = mode in _ALPHA_MODES or "transparency" in info
    if fmt in _CV2_FORMATS and not has_alpha:
        cost = _WEBP_PATH_COST if fmt == "webp" else _GRAY_PATH_COST
        if jpeg is not None and jpeg.scans > 1 and width * height > 0:
            planes = jpeg.plane_pixels / (width * height)
            cost = max(cost, _JPEG_BUFFERED_PAGE_COST + _JPEG_COEFFICIENT_BYTES * planes)
        _check_page(width, height, cost, settings, what=name)
        decode_ms = _jpeg_decode_ms(jpeg, len(data), settings) if jpeg else 0.0
        decode, reduced = _cv2_decoders(data, fmt, width, height, cv2.IMREAD_GRAYSCALE)
        return [Page(0, width, height, decode, pool, reduced, decode_ms)]
    if fmt == "webp":
        # A still WebP with alpha: OpenCV's BGRA into a band-wise flattening costs less
        # than Pillow's animation decoder with its extra canvases.
        _check_page(width, height, _WEBP_ALPHA_PATH_COST, settings, what=name)
        decode, _ = _cv2_decoders(data, fmt, width, height, cv2.IMREAD_UNCHANGED)
        return [Page(0, width, height, decode, pool)]
    _check_page(width, height, _pillow_cost(mode), settings, what=name)
    decode = _pillow_frame(data, 0, name)
    return [Page(0, width, height, decode, pool)]


def _frame_count(
    image: Image.Image, data: bytes, fmt: str, limit: int, check: Callable[[], None]
) -> tuple[int, bool]:
    """How many frames (pages) the image has, and whether that is only a lower bound.

    APNG and WebP declare their frame count. GIF and TIFF frames are counted only up to
    the page limit, so a file of a million tiny frames costs no more than one of
    `limit + 1`.
    """
    if fmt == "tiff":
        # One IFD at a time: Pillow's n_frames would read them all, and a failed long
        # seek leaves its count wrong.
        count = 1
        while count <= limit:
            try:
                image.seek(count)
            except EOFError:
                break
            count += 1
        image.seek(0)
        return count, count > limit
    if fmt == "gif":
        count = max(len(_gif_frames(data, limit, check)), 1)
        return count, count > limit
    if fmt in _ANIMATED_FORMATS:
        return getattr(image, "n_frames", 1), False
    return 1, False


def _gif_frames(data: bytes, limit: int, check: Callable[[], None]) -> list[_Rect]:
    """The GIF's image descriptors (x, y, width, height), found by skipping blocks and
    only up to `limit + 1`: Pillow's n_frames walks them all, seconds for the millions a
    50 MB file can hold."""
    if len(data) < 13:
        raise SyntaxError("truncated GIF header")
    end, pos = len(data), 13
    if data[10] & 0x80:
        pos += 3 << ((data[10] & 7) + 1)  # global colour table
    frames: list[_Rect] = []
    blocks = 0
    while len(frames) <= limit and pos < end:
        kind = data[pos]
        pos += 1
        if kind == 0x21:  # "!"
            pos += 1  # extension label
        elif kind == 0x2C and pos + 9 <= end:  # ","
            frames.append(struct.unpack_from("<HHHH", data, pos))
            flags = data[pos + 8]
            pos += 9
            if flags & 0x80:
                pos += 3 << ((flags & 7) + 1)  # local colour table
            pos += 1  # LZW minimum code size
        else:  # the trailer, the end of the data, or junk Pillow stops at too
            break
        while pos < end and data[pos]:
            pos += data[pos] + 1  # one sub-block
            blocks += 1
            if not blocks % _WALK_CHECK_EVERY:
                check()
        pos += 1  # the block terminator
    return frames


def _webp_frames(data: bytes, limit: int, check: Callable[[], None]) -> list[_Rect]:
    """The ANMF frame headers of an animated WebP (x, y, width, height), up to `limit`."""
    frames: list[_Rect] = []
    end, pos, chunks = len(data), 12, 0
    while pos + 8 <= end and len(frames) < limit:
        chunks += 1
        if not chunks % _WALK_CHECK_EVERY:
            check()
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        if kind == b"ANMF" and length >= 12 and pos + 20 <= end:
            x, y, w, h = (
                int.from_bytes(data[pos + 8 + k : pos + 11 + k], "little") for k in (0, 3, 6, 9)
            )
            frames.append((2 * x, 2 * y, w + 1, h + 1))  # offsets halved, sizes minus one
        pos += 8 + length + (length & 1)
    return frames


def _png_pixel_chunks(data: bytes, check: Callable[[], None]) -> tuple[bytes, list[_Rect]]:
    """The PNG with only the chunks that decide its pixels, and its APNG frames (x, y,
    width, height, from each fcTL). The input itself comes back when its ancillary
    chunks cannot trip a decoder; a chunk running past the end is kept as it is, for the
    decoder to judge."""
    pieces: list[memoryview] = []
    frames: list[_Rect] = []
    view = memoryview(data)
    end, pos, kept_from, dropped, compressed, chunks = len(data), 8, 0, 0, False, 0
    while pos + 12 <= end:
        chunks += 1
        if not chunks % _WALK_CHECK_EVERY:
            check()
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        after = pos + 12 + length
        if kind == b"fcTL" and length >= 26 and after <= end:
            width, height, x, y = struct.unpack_from(">IIII", data, pos + 12)
            frames.append((x, y, width, height))
        if kind not in _PNG_PIXEL_CHUNKS and kind[0] & 0x20:  # ancillary: lower-case first
            if kept_from < pos:
                pieces.append(view[kept_from:pos])
            kept_from, dropped = after, dropped + 12 + length
            compressed = compressed or kind in _PNG_COMPRESSED_CHUNKS
        if kind == b"IEND":
            break
        pos = after
    if dropped <= _PNG_ANCILLARY_LEFT and not compressed:
        return data, frames
    pieces.append(view[kept_from:])
    return b"".join(pieces), frames


def _png_canvas(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack_from(">II", data, 16)


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"VP8X" or len(data) < 30:
        return None  # a still WebP: no frames
    return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")


def _check_frames_inside(frames: list[_Rect], canvas: tuple[int, int] | None, name: str) -> None:
    """APNG and WebP require every frame inside the canvas, and their decoders refuse one
    outside it, some only once the frames before it are decoded: said here, from the
    frame headers, before anything is decoded."""
    if canvas is None:
        return
    width, height = canvas
    for index, (x, y, w, h) in enumerate(frames):
        if x + w > width or y + h > height:
            raise ScanFailed(
                ErrorCode.CORRUPT_IMAGE,
                f"frame {index + 1} of {name} is {w}x{h} at {x},{y}, outside its "
                f"{width}x{height} canvas: the format requires every frame inside it",
            )


def _gif_sizes(
    data: bytes, frames: int, name: str, check: Callable[[], None]
) -> list[tuple[tuple[int, int], str]]:
    """Each GIF frame's page size, with what to say about the frame if it is refused.

    A GIF frame may lie partly outside the logical screen, and Pillow then grows the
    canvas to cover it, for that frame and every later one: a 16x16 screen can hold a
    20000x20000 frame. So each page is the screen grown by every frame up to its own,
    what Pillow allocates, and it is charged as such, rather than refusing any frame
    past the screen, which some encoders write.
    """
    width, height = struct.unpack_from("<HH", data, 6)
    sizes = []
    for x, y, w, h in _gif_frames(data, frames, check)[:frames]:
        what = f" of {name}"
        if x + w > width or y + h > height:
            what = f" of {name} ({w}x{h} at {x},{y}, beyond its {width}x{height} screen)"
            width, height = max(width, x + w), max(height, y + h)
        sizes.append(((width, height), what))
    return sizes


def _check_jpeg_scans(data: bytes, settings: Settings) -> JpegShape:
    limit = settings.max_jpeg_scans
    shape = jpeg_shape(data, max_scans=limit)
    if shape.scans > limit:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"the JPEG has more than {limit} scans; the limit is {limit} (QRW_MAX_JPEG_SCANS): "
            "libjpeg decodes every scan over the whole page in one call no deadline stops",
        )
    return shape


def _jpeg_decode_ms(shape: JpegShape, size: int, settings: Settings) -> float:
    """What one decode of a JPEG of several scans is predicted to take, after refusing one
    whose scans cover more than QRW_MAX_JPEG_SCAN_PIXELS. Called once the page itself is
    within QRW_MAX_PIXELS, so a page too large is refused for that. A JPEG of one scan is
    decoded row by row, at a cost the page limits already bound: 0, never refused early."""
    if shape.scans <= 1:
        return 0.0
    limit = settings.max_jpeg_scan_pixels
    if shape.scan_pixels > limit:
        raise ScanFailed(
            ErrorCode.IMAGE_TOO_LARGE,
            f"the JPEG's {shape.scans} scans cover {shape.scan_pixels} pixels in all "
            f"({shape.width}x{shape.height}, each scan counted over the components it holds); "
            f"the limit is {limit} (QRW_MAX_JPEG_SCAN_PIXELS): libjpeg decodes them all in one "
            f"call no deadline stops, about {JPEG_SCAN_NS_PER_PIXEL:g} ns per pixel counted",
        )
    return (shape.scan_pixels * JPEG_SCAN_NS_PER_PIXEL + size * JPEG_DATA_NS_PER_BYTE) / 1e6


def _tiff_page(image: Image.Image, index: int) -> tuple[tuple[int, int], str]:
    image.seek(index)
    return image.size, image.mode


def _pillow_cost(mode: str) -> float:
    return _PILLOW_STORAGE.get(mode, 4) + _PILLOW_GRAY_COST


def _cv2_decoders(
    data: bytes, fmt: str, width: int, height: int, flag: int
) -> tuple[Callable[[], np.ndarray], Callable[[int], np.ndarray] | None]:
    """The whole-page decoder and, for JPEG, the DCT-scaled one."""
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
        image = decode(flag)
        if image.ndim == 2:
            return image
        if image.shape[2] == 4:
            return _flatten_bands(image, bgr=True)
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

    def reduced(max_side: int) -> np.ndarray:
        long_side = max(width, height)
        scaled = next(
            (fl for f, fl in _JPEG_REDUCTIONS if long_side / f <= max_side),
            _JPEG_REDUCTIONS[-1][1],
        )
        image = decode(scaled)
        if max(image.shape) > max_side:
            size = (
                max(1, round(width * max_side / long_side)),
                max(1, round(height * max_side / long_side)),
            )
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return image

    return full, (reduced if fmt == "jpeg" and flag == cv2.IMREAD_GRAYSCALE else None)


def _pillow_frame(data: bytes, index: int, what: str) -> Callable[[], np.ndarray]:
    """Decode page `index` from a fresh handle, so that the decoder and its frame are
    released once the gray page is made."""

    def decode() -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data)) as image:
                if index:
                    image.seek(index)
                return _pillow_gray(image)
        except _PILLOW_ERRORS as exc:
            raise _corrupt(what, exc) from exc

    return decode


@dataclass
class _Animation:
    """The frames of an animated GIF, PNG or WebP, which Pillow reaches only by decoding
    every frame before them.

    Each decode walks from the first frame on a fresh handle (released when done) and
    gives every frame it passes, and every frame after the one asked for, its small
    fast-pass copy. The fast pass and the detectors then find every page ready after one
    walk, and only pages that need their large images cost another walk: linear, not
    quadratic, in the frame count for the cheap stages.
    """

    data: bytes
    what: str
    pool: _Pool
    small_keys: list[int | None]  # a GIF's pages may differ in size
    caches: list[dict[int | None, tuple[np.ndarray, float]]]

    def frame(self, index: int) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(self.data)) as image:
                wanted: np.ndarray | None = None
                for frame, cache in enumerate(self.caches):
                    if frame > index and not self._prefetching(frame):
                        break
                    try:
                        self._step(image, frame, index, cache)
                    except _PILLOW_ERRORS:
                        if frame <= index:
                            raise
                        break  # a broken later frame fails when its own page is asked for
                    if frame == index:
                        wanted = _pillow_gray(image)
                assert wanted is not None
                return wanted
        except _PILLOW_ERRORS as exc:
            raise _corrupt(f"frame {index + 1} of {self.what}", exc) from exc

    def _step(
        self,
        image: Image.Image,
        frame: int,
        index: int,
        cache: dict[int | None, tuple[np.ndarray, float]],
    ) -> None:
        """Move the walk to `frame`, giving it its small copy on the way when it lacks one."""
        if frame:
            if frame <= index:
                self.pool.check_deadline()
            image.seek(frame)
        if frame == index:
            return  # decoded by the caller, and counted by the pool
        self.pool.decoded_pixels += image.width * image.height
        if self.small_keys[frame] not in cache and self.pool.keep_room():
            self._keep_small(frame, cache, _pillow_gray(image))

    def _prefetching(self, frame: int) -> bool:
        """Whether the walk should go on past the frame asked for, to `frame`."""
        if self.pool.deadline is not None and self.pool.deadline.expired():
            return False
        if not self.pool.keep_room():
            return False
        return any(
            key not in cache
            for key, cache in zip(self.small_keys[frame:], self.caches[frame:], strict=True)
        )

    def _keep_small(
        self, frame: int, cache: dict[int | None, tuple[np.ndarray, float]], gray: np.ndarray
    ) -> None:
        width, key = gray.shape[1], self.small_keys[frame]
        small = gray if key is None else _reduce(gray, key)
        cache[key] = (small, small.shape[1] / width)
        self.pool.kept_small(cache, small.nbytes)


def _pillow_gray(image: Image.Image) -> np.ndarray:
    """The current frame as uint8 gray, converted a band of rows at a time: the decoded
    frame is the only full-size copy, never an RGB, RGBA or float one beside it."""
    width, height = image.size
    image.load()
    mode = image.mode
    bands = [(top, min(height, top + _BAND_ROWS)) for top in range(0, height, _BAND_ROWS)]
    out = np.empty((height, width), np.uint8)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        for top, bottom in bands:
            rgba = np.asarray(image.crop((0, top, width, bottom)).convert("RGBA"))
            out[top:bottom] = _flatten_alpha(rgba[:, :, :3], rgba[:, :, 3], bgr=False)
    elif mode in _WIDE_MODES:
        # 16-bit and float scans: stretch to 8 bits instead of clipping to white.
        low, high = math.inf, -math.inf
        for top, bottom in bands:
            wide = np.asarray(image.crop((0, top, width, bottom)), dtype=np.float32)
            low, high = min(low, float(wide.min())), max(high, float(wide.max()))
        factor = 255.0 / ((high - low) or 1.0)
        for top, bottom in bands:
            wide = np.asarray(image.crop((0, top, width, bottom)), dtype=np.float32)
            out[top:bottom] = ((wide - low) * factor).astype(np.uint8)
    else:
        for top, bottom in bands:
            out[top:bottom] = np.asarray(image.crop((0, top, width, bottom)).convert("L"))
    return out


def _flatten_bands(bgra: np.ndarray, *, bgr: bool) -> np.ndarray:
    height, width = bgra.shape[:2]
    out = np.empty((height, width), np.uint8)
    for top in range(0, height, _BAND_ROWS):
        band = bgra[top : top + _BAND_ROWS]
        out[top : top + _BAND_ROWS] = _flatten_alpha(band[:, :, :3], band[:, :, 3], bgr=bgr)
    return out


def _flatten_alpha(color: np.ndarray, alpha: np.ndarray, *, bgr: bool) -> np.ndarray:
    # A code drawn on a transparent background must land on white paper, not on black.
    code = cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY
    gray = cv2.cvtColor(np.ascontiguousarray(color), code).astype(np.uint16)
    a = alpha.astype(np.uint16)
    return ((gray * a + 255 * (255 - a)) // 255).astype(np.uint8)


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
