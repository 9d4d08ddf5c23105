"""PDF documents: checked before PDFium parses a page, rendered lazily at the sizes asked for.

PDFium is a large native parser that no in-process check can fully bound: a page's
content is parsed whole when the page is loaded, and a FlateDecode stream of 1 MB can
inflate to a gigabyte of operators that PDFium holds (twice, while it parses) and walks for
tens of seconds. So a PDF goes through two guards:

- a cheap one here, before PDFium sees the file: the Flate streams PDFium parses as
  operators or objects (page contents, form XObjects, object streams; not images, font
  programs or attachments) are inflated and counted, at most PDF_MAX_STREAM_BYTES in
  all, without keeping what they inflate to; past it the document is refused with
  image_too_large;
- the general one in worker.engine.isolation, for whatever no check foresees: PDFium
  runs in a child process with an address-space limit, killed at the scan's deadline.

Both the child and the in-process path (QRW_PDF_CHILD=false) open, check and render
through the functions below, so the two cannot disagree on what a PDF is. This module
loads neither OpenCV nor the rest of the engine at import: the child imports it too.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from worker.engine.errors import DeadlineReached, ErrorCode, ScanFailed

if TYPE_CHECKING:
    import numpy as np

    from worker.engine.images import Page, _Pool
    from worker.engine.pdf_pages import Affine
    from worker.settings import Settings

# Inflated bytes of a document's Flate streams that PDFium parses as operators or objects:
# page contents, form XObjects, patterns, object and cross-reference streams. An invoice
# holds a few KiB of them. Just under this limit, a page of `q Q ` takes PDFium 0.27 s and
# 29 MiB to load and render (64 MiB of it: 1.2 s and 130 MiB). Images, font programs and
# attachments are left out: PDFium decodes them as data, not as operators, and the child's
# address-space limit bounds what they take.
PDF_MAX_STREAM_BYTES = 16 * 2**20
# PDFium's error code for a document that needs a password it was not given.
_FPDF_ERR_PASSWORD = 4

# `stream` at the start of a stream's data; `endstream` is excluded by the lookbehind.
_STREAM = re.compile(rb"(?<![A-Za-z])stream(?:\r\n|\n|\r)")
_NOT_OPERATORS = re.compile(
    rb"/Subtype\s*/(?:Image|Type1C|CIDFontType0C|OpenType)\b|/Length[123]\b|/Type\s*/EmbeddedFile\b"
)
_FLATE = re.compile(rb"/(?:FlateDecode|Fl)\b")
# How far back from `stream` its dictionary may start: dictionaries are short.
_DICT_WINDOW = 64 * 1024
_INFLATE_IN = 64 * 1024
_INFLATE_OUT = 1 << 20


def check_streams(data: bytes, limit: int = PDF_MAX_STREAM_BYTES) -> None:
    """Refuse a PDF whose Flate streams of operators and objects inflate past `limit` bytes.

    The streams are found in the file's bytes, as PDFium itself recovers them from a
    broken cross-reference table, and each is inflated only up to its `endstream`, so
    the check reads every byte of the file at most once and holds 1 MiB at a time. An
    encrypted stream does not inflate and counts nothing: the child's limits guard those.
    """
    view = memoryview(data)
    total = 0
    position = 0
    while (found := _STREAM.search(data, position)) is not None:
        start = found.end()
        end = data.find(b"endstream", start)
        end = len(data) if end < 0 else end
        position = max(end, start)
        head = data[max(0, found.start() - _DICT_WINDOW) : found.start()]
        head = head[head.rfind(b"obj") + 1 :]
        if not _FLATE.search(head) or _NOT_OPERATORS.search(head):
            continue
        total += _inflated_size(view[start:end], limit - total)
        if total > limit:
            raise ScanFailed(
                ErrorCode.IMAGE_TOO_LARGE,
                f"the PDF's content streams inflate to more than {limit} bytes (at most "
                f"{limit // 2**20} MiB of page content and objects per document is read)",
            )


def _inflated_size(raw: memoryview, budget: int) -> int:
    """How many bytes `raw` inflates to, counted up to just past `budget`."""
    inflater = zlib.decompressobj()
    total = 0
    position = 0
    pending: bytes | memoryview = b""
    try:
        while position < len(raw) or pending:
            if not pending:
                pending = raw[position : position + _INFLATE_IN]
                position += len(pending)
            total += len(inflater.decompress(pending, _INFLATE_OUT))
            pending = inflater.unconsumed_tail
            if total > budget or inflater.eof:
                break
    except zlib.error:
        pass  # PDFium keeps what inflated before the damage, and so does the count
    return total


def open_pdf(data: bytes) -> Any:
    """The document as a pypdfium2 PdfDocument; raises ScanFailed with a stable code."""
    import pypdfium2 as pdfium  # only PDF inputs pay for loading PDFium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == _FPDF_ERR_PASSWORD:
            raise ScanFailed(
                ErrorCode.ENCRYPTED_DOCUMENT,
                "the PDF is encrypted with a password (a user password): it cannot be read",
            ) from exc
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"the PDF cannot be opened: {exc}") from exc


def page_sizes(pdf: Any, max_pages: int) -> tuple[int, list[tuple[float, float]]]:
    """The page count and, when it is within `max_pages`, every page's size in points.

    Sizes are read from the page tree without loading the pages: loading one parses its
    content, which is what the stream check has to bound first. A page tree PDFium cannot
    walk (a loop, a chain deeper than it follows) is a corrupt document.
    """
    import pypdfium2 as pdfium

    count = len(pdf)
    if count == 0:
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, "the PDF has no pages")
    if count > max_pages:
        return count, []
    sizes = []
    for index in range(count):
        try:
            points_w, points_h = pdf.get_page_size(index)
        except pdfium.PdfiumError as exc:
            raise ScanFailed(
                ErrorCode.CORRUPT_IMAGE,
                f"PDF page {index + 1} cannot be found in its page tree: {exc}",
            ) from exc
        if not (points_w > 0 and points_h > 0 and math.isfinite(points_w * points_h)):
            raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} has no area")
        sizes.append((points_w, points_h))
    return count, sizes


Allocate = Callable[[int, int], Any]


def page_kinds(pdf: Any, count: int) -> list[dict[str, Any]]:
    """Each of the first `count` pages' kind (worker.engine.pdf_pages.inspect). A page that
    cannot be loaded is "mixed" here: rendered, it fails with its own error when a stage
    asks for it, as before any page was classified."""
    from worker.engine import pdf_pages

    kinds = []
    for index in range(count):
        try:
            kinds.append(pdf_pages.inspect(pdf, index))
        except ScanFailed:
            kinds.append({"kind": pdf_pages.MIXED})
    return kinds


def render_page(pdf: Any, index: int, scale: float, allocate: Allocate) -> tuple[int, int]:
    """Render page `index` at `scale` as 8-bit gray into the buffer `allocate(width,
    height)` returns (a writable buffer of width * height bytes, rows packed).

    Returns the bitmap's width and height. Raises ScanFailed (corrupt_image) when PDFium
    cannot load or render the page.
    """
    import pypdfium2 as pdfium

    try:
        page = pdf[index]
    except pdfium.PdfiumError as exc:
        raise ScanFailed(
            ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} cannot be loaded: {exc}"
        ) from exc
    try:
        return _render_loaded(page, index, scale, allocate)
    finally:
        page.close()


def _render_loaded(page: Any, index: int, scale: float, allocate: Allocate) -> tuple[int, int]:
    """render_page() for page `index`, already loaded."""
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        made: list[tuple[int, int]] = []

        def bitmap_maker(width: int, height: int, **kwargs: Any) -> Any:
            buffer = (ctypes.c_ubyte * (width * height)).from_buffer(allocate(width, height))
            made.append((width, height))
            return pdfium.PdfBitmap.new_native(width, height, buffer=buffer, **kwargs)

        page.render(
            scale=scale,
            grayscale=True,
            bitmap_maker=bitmap_maker,
            force_bitmap_format=pdfium_c.FPDFBitmap_Gray,
        )
        return made[0]
    except pdfium.PdfiumError as exc:
        raise ScanFailed(
            ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} cannot be rendered: {exc}"
        ) from exc


AllocateAt = Callable[[int, int], Any]


def visit_pages(
    pdf: Any,
    sizes: list[tuple[float, float]],
    scales: list[float],
    budget: int,
    allocate_at: AllocateAt,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page loaded once: its kind (page_kinds) and, while their bytes stay within
    `budget`, what the engine asks of it first, put one after another in the buffer that
    `allocate_at(offset, size)` returns a writable view of: a rendered page's render at
    `scales[index]` (the fast pass's), a scan's raw JPEG data.

    Loading a page parses its content, and each request to the renderer child is a round
    trip between two processes: one visit does it all for a document of a few pages. Returns
    the kinds and where each prefetched page is: {"index", "offset", "width", "height",
    "scale"} for a render, {"index", "offset", "size", "jpeg": True} for JPEG data. A page
    that fails to load is "mixed", and one that fails to render or give its data is left
    out: each fails with its own error when a stage asks for it, as before.
    """
    import pypdfium2 as pdfium

    from worker.engine import pdf_pages

    kinds: list[dict[str, Any]] = []
    prefetched: list[dict[str, Any]] = []
    offset = 0
    for index in range(len(sizes)):
        try:
            page = pdf[index]
        except pdfium.PdfiumError:
            kinds.append({"kind": pdf_pages.MIXED})
            continue
        try:
            try:
                kind = pdf_pages.inspect_page(page)
            except ScanFailed:
                kind = {"kind": pdf_pages.MIXED}
            kinds.append(kind)
            image = kind.get("image")
            try:
                if image is not None and image["jpeg"]:
                    # A JPEG's size is known once copied: given room up to what is left.
                    if offset >= budget:
                        continue
                    size = pdf_pages.page_jpeg_data(
                        page, index, lambda n, _, at=offset: allocate_at(at, n)
                    )
                    prefetched.append(
                        {"index": index, "offset": offset, "size": size, "jpeg": True}
                    )
                    offset += size
                elif image is None:
                    points_w, points_h = sizes[index]
                    needed = math.floor(points_w * scales[index]) * math.floor(
                        points_h * scales[index]
                    )
                    if offset + needed > budget:
                        continue
                    width, height = _render_loaded(
                        page, index, scales[index], lambda w, h, at=offset: allocate_at(at, w * h)
                    )
                    prefetched.append(
                        {
                            "index": index,
                            "offset": offset,
                            "width": width,
                            "height": height,
                            "scale": scales[index],
                        }
                    )
                    offset += width * height
            except ScanFailed:
                pass  # said when a stage asks for the page
        finally:
            page.close()
    return kinds, prefetched


# --------------------------------------------------------------------------- the engine's side


class Renderer(Protocol):
    """An open PDF, wherever PDFium runs: its page sizes and kinds, and pages rendered (or
    a scan's image read) on demand."""

    count: int
    sizes: list[tuple[float, float]]
    kinds: list[dict[str, Any]]

    def render(self, index: int, scale: float) -> np.ndarray: ...

    def jpeg(self, index: int) -> bytes: ...

    def render_image(self, index: int, to_page: Affine, size: tuple[int, int]) -> np.ndarray: ...

    def render_region(
        self, index: int, scale: float, box: tuple[float, float, float, float]
    ) -> tuple[np.ndarray, int, int]: ...


class _InProcess:
    """PDFium in this process (QRW_PDF_CHILD=false): the same checks, no child's limits."""

    def __init__(self, data: bytes, settings: Settings) -> None:
        check_streams(data)
        self._pdf = open_pdf(data)
        self.count, self.sizes = page_sizes(self._pdf, settings.max_pages)
        self.kinds = page_kinds(self._pdf, len(self.sizes))

    def render(self, index: int, scale: float) -> np.ndarray:
        holder: list[np.ndarray] = []
        render_page(self._pdf, index, scale, _allocator(holder))
        return holder[0]

    def jpeg(self, index: int) -> bytes:
        from worker.engine import pdf_pages

        holder: list[np.ndarray] = []
        pdf_pages.jpeg_data(self._pdf, index, _allocator(holder))
        return holder[0].tobytes()

    def render_image(self, index: int, to_page: Affine, size: tuple[int, int]) -> np.ndarray:
        from worker.engine import pdf_pages

        holder: list[np.ndarray] = []
        pdf_pages.render_image(self._pdf, index, to_page, size, _allocator(holder))
        return holder[0]

    def render_region(
        self, index: int, scale: float, box: tuple[float, float, float, float]
    ) -> tuple[np.ndarray, int, int]:
        from worker.engine import pdf_pages

        holder: list[np.ndarray] = []
        left, top, _, _ = pdf_pages.render_region(self._pdf, index, scale, box, _allocator(holder))
        return holder[0], left, top


def _allocator(holder: list[np.ndarray]) -> Allocate:
    import numpy as np

    def allocate(width: int, height: int) -> np.ndarray:
        holder.append(np.empty((height, width), np.uint8))
        return holder[0]

    return allocate


def page_grids(
    sizes: list[tuple[float, float]], dpi: int, max_pixels: int, max_document_pixels: int
) -> list[tuple[float, int, int]]:
    """Each page's rendering scale (pixels per point) and pixel grid: QRW_PDF_DPI, lowered
    to fit the page and document pixel budgets."""
    # Posters and drawings can be huge in points: lower the resolution to fit the page and
    # document pixel budgets rather than refuse a legitimate document.
    fit_document = math.sqrt(max_document_pixels / sum(w * h for w, h in sizes))
    grids = []
    for points_w, points_h in sizes:
        fit_page = math.sqrt(max_pixels / (points_w * points_h))
        scale = min(dpi / 72.0, fit_page, fit_document)
        width, height = max(1, math.floor(points_w * scale)), max(1, math.floor(points_h * scale))
        grids.append((scale, width, height))
    return grids


def reduced_scale(grid: tuple[float, int, int], max_side: int | None) -> float:
    """The scale page `grid` is rendered at when a stage asks for `max_side`: the PDF
    analogue of JPEG DCT scaling, straight to the reduced size."""
    scale, width, height = grid
    if max_side is None or max(width, height) <= max_side:
        return scale
    return scale * (max_side / max(width, height))


def pdf_pages(data: bytes, settings: Settings, pool: _Pool) -> list[Page]:
    """The pages of a PDF, each rendered when a stage first asks for it, at that size."""
    from worker.engine import images

    renderer: Renderer
    if settings.pdf_child:
        from worker.engine import isolation

        try:
            renderer = isolation.open_in_child(data, settings, pool.deadline)
        except DeadlineReached as exc:
            raise ScanFailed(ErrorCode.DEADLINE_EXCEEDED, str(exc)) from exc
    else:
        renderer = _InProcess(data, settings)
    images._check_page_count(renderer.count, settings, what="the PDF")
    grids = page_grids(
        renderer.sizes, settings.pdf_dpi, settings.max_pixels, settings.max_document_pixels
    )
    native = _native_images(renderer.kinds, grids, settings)
    pages: list[Page] = []
    for index, grid in enumerate(grids):
        kind = renderer.kinds[index]["kind"] if index < len(renderer.kinds) else None
        image = native.get(index)
        page = None
        if image is not None:
            page = _scanned_page(renderer, index, grid, image, settings, pool)
        if page is None:
            render = _page_renderer(renderer, index, grid)
            _, width, height = grid
            page = images.Page(index, width, height, lambda r=render: r(None), pool, render)
            page.region = _region_renderer(renderer, index, grid, pool)
        page.kind = kind
        pages.append(page)
    return pages


def _native_images(
    kinds: list[dict[str, Any]], grids: list[tuple[float, int, int]], settings: Settings
) -> dict[int, dict[str, Any]]:
    """The scanned pages read from their images, by page: all that can be, unless their
    images' pixels would take the document past QRW_MAX_DOCUMENT_PIXELS, which the rendered
    pages were fitted to (then every page is rendered, as before pages had kinds)."""
    native = {i: kind["image"] for i, kind in enumerate(kinds) if "image" in kind}
    total = sum(
        native[i]["width"] * native[i]["height"] if i in native else w * h
        for i, (_, w, h) in enumerate(grids)
    )
    return native if total <= settings.max_document_pixels else {}


def _scanned_page(
    renderer: Renderer,
    index: int,
    grid: tuple[float, int, int],
    image: dict[str, Any],
    settings: Settings,
    pool: _Pool,
) -> Page | None:
    """A scanned page read from its image at the image's own resolution; None where that
    cannot be (the page is then rendered, as before pages had kinds).

    The image must fill the page's grid, upright and scaled alike both ways, as scanners
    place it: then one scale maps its pixels onto the grid, and every stage's coordinates
    land on the page as a rendered page's would. A placement with margins, a turn or a
    stretch is rendered.
    """
    from worker.engine import images

    scale, grid_w, grid_h = grid
    width, height = int(image["width"]), int(image["height"])
    to_page: Affine = tuple(float(v) for v in image["to_page"])  # type: ignore[assignment]
    if not _fills_grid(to_page, scale, (width, height), (grid_w, grid_h)):
        return None
    what = f"the image of PDF page {index + 1}"
    page: Page
    if image["jpeg"]:
        data = renderer.jpeg(index)
        if images.sniff(data) != "jpeg":
            return None
        # The same checks and decoders as a JPEG file: QRW_MAX_PIXELS, the page's memory,
        # QRW_MAX_JPEG_SCANS and _SCAN_PIXELS, libjpeg's DCT scaling for the fast pass.
        try:
            (page,) = images._raster_pages(data, "jpeg", settings, pool)
        except ScanFailed as failure:
            raise ScanFailed(failure.code, f"{what}: {failure.message}") from None
        if (page.width, page.height) != (width, height):
            return None  # the JPEG's own frame is not what the PDF says it draws
        page.index = index
    else:
        images._check_page(width, height, images._GRAY_PATH_COST, settings, what=what)

        def full() -> np.ndarray:
            return renderer.render_image(index, to_page, (width, height))

        def reduced(max_side: int) -> np.ndarray:
            factor = min(1.0, max_side / max(width, height))
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            return renderer.render_image(index, to_page, size)

        page = images.Page(index, width, height, full, pool, reduced)
    page.native = (width, height)
    page.width, page.height = grid_w, grid_h
    return page


# How far a scan's placement may stray from filling its page's grid, upright and evenly
# scaled: half a percent of scale between the axes, a pixel of the grid at the edges.
_EVEN_SCALE = 0.005
_EDGE_PX = 1.5


def _fills_grid(
    to_page: tuple[float, ...], scale: float, size: tuple[int, int], grid: tuple[int, int]
) -> bool:
    a, b, c, d, e, f = (v * scale for v in to_page)  # image pixels to grid pixels
    if abs(b) > 1e-6 * abs(a) or abs(c) > 1e-6 * abs(d) or a <= 0 or d <= 0:
        return False
    if abs(a - d) > _EVEN_SCALE * a:
        return False
    right, bottom = a * size[0] + e, d * size[1] + f
    return (
        abs(e) <= _EDGE_PX
        and abs(f) <= _EDGE_PX
        and abs(right - grid[0]) <= _EDGE_PX + a
        and abs(bottom - grid[1]) <= _EDGE_PX + d
    )


def _page_renderer(
    renderer: Renderer, index: int, grid: tuple[float, int, int]
) -> Callable[[int | None], np.ndarray]:
    def render(max_side: int | None) -> np.ndarray:
        return renderer.render(index, reduced_scale(grid, max_side))

    return render


def _region_renderer(
    renderer: Renderer, index: int, grid: tuple[float, int, int], pool: _Pool
) -> Callable[[tuple[float, float, float, float], float], tuple[np.ndarray, float, float]]:
    """Render a box of the page (page pixels) at `factor` times the page's resolution:
    the image and its left and top in pixels of the whole page at that resolution. Counted
    as the page's decoding is: its time, its pixels, refused after the deadline."""
    scale = grid[0]

    def region(
        box: tuple[float, float, float, float], factor: float
    ) -> tuple[np.ndarray, float, float]:
        points: tuple[float, float, float, float] = tuple(v / scale for v in box)  # type: ignore[assignment]
        placed: list[tuple[int, int]] = []

        def render() -> np.ndarray:
            image, left, top = renderer.render_region(index, scale * factor, points)
            placed.append((left, top))
            return image

        image = pool.decode(render)
        left, top = placed[0]
        return image, float(left), float(top)

    return region
