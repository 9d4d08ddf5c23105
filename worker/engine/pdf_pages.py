"""What a PDF page is, from its page objects, and a scanned page's image at its own resolution.

A PDF page is one of two things in a billing system's inbox, and each is read best its own
way (issue 22):

- **born_digital**: text and vector drawing from invoicing software, images small (a logo, a
  code placed as a small picture). Rendered, it is clean: a fast-resolution render that
  shows no finder pattern and no detector box holds no code (the cascade's early stop).
- **scanned**: one image object covering the page and nothing else visible (an OCR layer
  is invisible text): a scanner's JPEG or bitonal image. Rendering would resample it to
  QRW_PDF_DPI; read instead at its own resolution, through the path an image file takes:
  the raw JPEG data where its only filter is DCTDecode (libjpeg's DCT scaling for the fast
  pass, the header checks and the risky-decoder rules), otherwise PDFium renders the page
  with the image mapped pixel for pixel onto the bitmap (CCITT, JBIG2, Flate).
- **mixed**: anything else (a large photo on a digital page, a scan with visible stamps,
  annotations that draw, a page turned by /Rotate): rendered, and read by the whole cascade,
  no early stop: only a page shown to be born-digital is ever stopped early.

The kind is decided from the page objects PDFium parsed, never from a file name or a
producer string. This module loads only pypdfium2: the PDF child process
(worker.engine.isolation) runs it, and so does the in-process path (QRW_PDF_CHILD=false),
so both classify and extract alike.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterator
from typing import Any

from worker.engine.errors import ErrorCode, ScanFailed

BORN_DIGITAL = "born_digital"
SCANNED = "scanned"
MIXED = "mixed"
KINDS = (BORN_DIGITAL, SCANNED, MIXED)

# A scan's image covers its page; scanners and their PDF writers round the page size to
# points, so a little less than all of it.
_COVERS = 0.9
# On a born-digital page every image is small (a logo, a code as a picture, a signature):
# each under this share of the page, all together under the next.
_SMALL_IMAGE = 0.2
_SMALL_IMAGES = 0.4
# How deep form XObjects are followed: PDFium's own limit for page objects.
_FORM_DEPTH = 15

Affine = tuple[float, float, float, float, float, float]  # a, b, c, d, e, f
Allocate = Callable[[int, int], Any]


def inspect(pdf: Any, index: int) -> dict[str, Any]:
    """Page `index`'s kind and, for a scanned page that can be read at its image's own
    resolution, that image: {"kind": ..., "image": {"width", "height", "jpeg", "to_page"}}.

    `to_page` maps the image's pixel grid (x right, y down from its top row) to the page's
    (x right, y down from the top of its bounding box, in points). A page PDFium cannot load
    is corrupt_image, as when it is rendered.
    """
    page = _load(pdf, index)
    try:
        return inspect_page(page)
    finally:
        page.close()


def inspect_page(page: Any) -> dict[str, Any]:
    """inspect() for a page already loaded (the renderer child classifies and renders a
    page in one visit: loading parses the page's content, the dearest part of both)."""
    import pypdfium2 as pdfium

    kind, image = _classify(pdfium, page)
    info: dict[str, Any] = {"kind": kind}
    if image is not None:
        info["image"] = image
    return info


def _load(pdf: Any, index: int) -> Any:
    import pypdfium2 as pdfium

    try:
        return pdf[index]
    except pdfium.PdfiumError as exc:
        raise ScanFailed(
            ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} cannot be loaded: {exc}"
        ) from exc


def _classify(pdfium: Any, page: Any) -> tuple[str, dict[str, Any] | None]:
    """The page's kind, and for a scan its image's info (None where it is rendered)."""
    import pypdfium2.raw as pdfium_c

    left, bottom, right, top = page.get_bbox()
    area = (right - left) * (top - bottom)
    if not area > 0:
        return MIXED, None
    drawing_annotations = _drawing_annotations(pdfium_c, page)
    box = (left, bottom, right, top)
    # Each image: its object, share of the page, matrix, and whether it is drawn by the
    # page itself (not from inside a form XObject).
    images: list[tuple[Any, float, Affine, bool]] = []
    visible_other = False
    for obj, kind, matrix, depth in _objects(pdfium_c, page):
        if kind == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            images.append((obj, _share(matrix, box, area), matrix, depth == 0))
        elif kind == pdfium_c.FPDF_PAGEOBJ_TEXT:
            if not visible_other:
                mode = pdfium_c.FPDFTextObj_GetTextRenderMode(obj)
                visible_other = mode != pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE
        elif kind != pdfium_c.FPDF_PAGEOBJ_FORM:
            visible_other = True  # paths, shadings, anything PDFium adds later
    shares = [share for _, share, _, _ in images]
    small = all(s < _SMALL_IMAGE for s in shares) and sum(shares) < _SMALL_IMAGES
    if small and not drawing_annotations:
        return BORN_DIGITAL, None
    large = [item for item in images if item[1] >= _COVERS]
    if drawing_annotations or visible_other or len(images) != 1 or not large:
        return MIXED, None
    obj, _, matrix, own = large[0]
    if pdfium_c.FPDFPage_GetRotation(page) != 0 or not own:
        # Rendering turns the page, or the image is drawn from inside a form: rare enough
        # for scans that such a page is rendered, still as a scan.
        return SCANNED, None
    return SCANNED, _image_info(pdfium, pdfium_c, page, obj, matrix, left, top)


_IDENTITY: Affine = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def _objects(pdfium_c: Any, page: Any) -> Iterator[tuple[Any, int, Affine, int]]:
    """Every page object (raw handle), those inside form XObjects too, with its type, the
    matrix that maps its own space to the page's (an image's unit square to where it is
    drawn; the identity for text and paths, whose matrix nothing here needs) and its depth
    in forms. Raw calls: an invoice page holds hundreds of objects."""
    stack: list[tuple[Any, Affine, int]] = [(None, _IDENTITY, 0)]
    while stack:
        form, outer, depth = stack.pop()
        if form is None:
            count, get = pdfium_c.FPDFPage_CountObjects(page), pdfium_c.FPDFPage_GetObject
            parent = page
        else:
            count, get = pdfium_c.FPDFFormObj_CountObjects(form), pdfium_c.FPDFFormObj_GetObject
            parent = form
        for index in range(max(count, 0)):
            obj = get(parent, index)
            if not obj:
                continue
            kind = pdfium_c.FPDFPageObj_GetType(obj)
            if kind in (pdfium_c.FPDF_PAGEOBJ_IMAGE, pdfium_c.FPDF_PAGEOBJ_FORM):
                matrix = compose(_matrix(pdfium_c, obj), outer)
                if kind == pdfium_c.FPDF_PAGEOBJ_FORM and depth < _FORM_DEPTH:
                    stack.append((obj, matrix, depth + 1))
            else:
                matrix = _IDENTITY
            yield obj, kind, matrix, depth


def _matrix(pdfium_c: Any, obj: Any) -> Affine:
    matrix = pdfium_c.FS_MATRIX()
    if not pdfium_c.FPDFPageObj_GetMatrix(obj, matrix):
        return (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    return (matrix.a, matrix.b, matrix.c, matrix.d, matrix.e, matrix.f)


def compose(inner: Affine, outer: Affine) -> Affine:
    """`inner` then `outer` (PDF row-vector convention: inner x outer)."""
    a1, b1, c1, d1, e1, f1 = inner
    a2, b2, c2, d2, e2, f2 = outer
    return (
        a1 * a2 + b1 * c2,
        a1 * b2 + b1 * d2,
        c1 * a2 + d1 * c2,
        c1 * b2 + d1 * d2,
        e1 * a2 + f1 * c2 + e2,
        e1 * b2 + f1 * d2 + f2,
    )


def _apply(matrix: Affine, x: float, y: float) -> tuple[float, float]:
    a, b, c, d, e, f = matrix
    return a * x + c * y + e, b * x + d * y + f


def _share(matrix: Affine, box: tuple[float, float, float, float], area: float) -> float:
    """How much of the page box the image's unit square, placed by `matrix`, covers: the
    area of its outline clipped to the box, over the box's area (an axis-aligned image is
    exact; a turned one is counted by its bounding box, clipped)."""
    corners = [_apply(matrix, x, y) for x, y in ((0, 0), (1, 0), (1, 1), (0, 1))]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    left, bottom, right, top = box
    width = max(0.0, min(max(xs), right) - max(min(xs), left))
    height = max(0.0, min(max(ys), top) - max(min(ys), bottom))
    a, b, c, d, _, _ = matrix
    outline = abs(a * d - b * c)
    bounds = (max(xs) - min(xs)) * (max(ys) - min(ys))
    # The outline's own area over its bounding box's: 1 for an upright image.
    fill = outline / bounds if bounds > 0 else 0.0
    return width * height * fill / area


def _drawing_annotations(pdfium_c: Any, page: Any) -> bool:
    """Whether an annotation other than a link is on the page: rendering draws those (a
    stamp, a widget's appearance), and neither kind of page is then what its objects say."""
    for index in range(pdfium_c.FPDFPage_GetAnnotCount(page)):
        annotation = pdfium_c.FPDFPage_GetAnnot(page, index)
        if not annotation:
            return True
        try:
            if pdfium_c.FPDFAnnot_GetSubtype(annotation) != pdfium_c.FPDF_ANNOT_LINK:
                return True
        finally:
            pdfium_c.FPDFPage_CloseAnnot(annotation)
    return False


def _image_info(
    pdfium: Any, pdfium_c: Any, page: Any, raw: Any, matrix: Affine, left: float, top: float
) -> dict[str, Any]:
    obj = pdfium.PdfObject(raw, page=page, pdf=page.pdf)
    width, height = obj.get_px_size()
    filters = obj.get_filters()
    metadata = obj.get_metadata()
    # libjpeg reads a JPEG of gray or RGB samples as the file holds them; CMYK, Lab, an
    # indexed or separation space needs PDFium's colour conversion: rendered instead.
    jpeg = filters == ["DCTDecode"] and metadata.colorspace in (
        pdfium_c.FPDF_COLORSPACE_DEVICEGRAY,
        pdfium_c.FPDF_COLORSPACE_DEVICERGB,
        pdfium_c.FPDF_COLORSPACE_CALGRAY,
        pdfium_c.FPDF_COLORSPACE_CALRGB,
        pdfium_c.FPDF_COLORSPACE_ICCBASED,
    )
    return {
        "width": width,
        "height": height,
        "jpeg": jpeg,
        "to_page": list(_pixels_to_page(matrix, width, height, left, top)),
    }


def _pixels_to_page(matrix: Affine, width: int, height: int, left: float, top: float) -> Affine:
    """Image pixel (x right, y down) to page point (x right, y down from the box's top)."""
    # Pixel (u, v) is unit-square point (u / width, 1 - v / height): row 0 is drawn at the
    # top of the image's unit square.
    to_unit: Affine = (1.0 / width, 0.0, 0.0, -1.0 / height, 0.0, 1.0)
    flip: Affine = (1.0, 0.0, 0.0, -1.0, -left, top)
    return compose(compose(to_unit, matrix), flip)


def invert(matrix: Affine) -> Affine:
    a, b, c, d, e, f = matrix
    det = a * d - b * c
    if det == 0 or not math.isfinite(det):
        raise ValueError("a degenerate placement")
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return (ia, ib, ic, id_, -(e * ia + f * ic), -(e * ib + f * id_))


def _scanned_image(pdfium: Any, page: Any) -> Any:
    import pypdfium2.raw as pdfium_c

    for obj in page.get_objects(max_depth=0):
        if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            return obj
    raise ScanFailed(ErrorCode.CORRUPT_IMAGE, "the scanned page's image is gone")


def jpeg_data(pdf: Any, index: int, allocate: Allocate) -> int:
    """Copy the raw DCTDecode data of scanned page `index`'s image into `allocate(size, 1)`;
    returns its size."""
    page = _load(pdf, index)
    try:
        return page_jpeg_data(page, index, allocate)
    finally:
        page.close()


def page_jpeg_data(page: Any, index: int, allocate: Allocate) -> int:
    """jpeg_data() for page `index`, already loaded."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    obj = _scanned_image(pdfium, page)
    size = pdfium_c.FPDFImageObj_GetImageDataRaw(obj, None, 0)
    if size <= 0:
        raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1}'s image holds no data")
    buffer = (ctypes.c_ubyte * size).from_buffer(allocate(size, 1))
    pdfium_c.FPDFImageObj_GetImageDataRaw(obj, buffer, size)
    return size


def render_image(
    pdf: Any, index: int, to_page: Affine, size: tuple[int, int], allocate: Allocate
) -> tuple[int, int]:
    """Render scanned page `index` as 8-bit gray onto a bitmap of `size` (width, height)
    pixels that its image, placed by `to_page` (image pixels to page points, y down), fills
    exactly: the image at its own resolution (or a reduction of it), whatever its filter.
    Returns the bitmap's width and height."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    width, height = size
    page = _load(pdf, index)
    bitmap = None
    try:
        image_w, image_h = _scanned_image(pdfium, page).get_px_size()
        # Page points (y down, as PDFium's 1:1 display matrix gives them) to bitmap pixels:
        # back to image pixels, then scaled to the bitmap.
        scale: Affine = (width / image_w, 0.0, 0.0, height / image_h, 0.0, 0.0)
        device = compose(invert(to_page), scale)
        matrix = pdfium_c.FS_MATRIX(*device)
        clip = pdfium_c.FS_RECTF(0.0, 0.0, float(width), float(height))
        buffer = (ctypes.c_ubyte * (width * height)).from_buffer(allocate(width, height))
        bitmap = pdfium_c.FPDFBitmap_CreateEx(
            width, height, pdfium_c.FPDFBitmap_Gray, buffer, width
        )
        if not bitmap:
            raise ScanFailed(
                ErrorCode.IMAGE_TOO_LARGE, f"PDF page {index + 1}'s image cannot be allocated"
            )
        pdfium_c.FPDFBitmap_FillRect(bitmap, 0, 0, width, height, 0xFFFFFFFF)
        flags = pdfium_c.FPDF_GRAYSCALE | pdfium_c.FPDF_ANNOT
        pdfium_c.FPDF_RenderPageBitmapWithMatrix(bitmap, page, matrix, clip, flags)
        return width, height
    except pdfium.PdfiumError as exc:
        raise ScanFailed(
            ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} cannot be rendered: {exc}"
        ) from exc
    finally:
        if bitmap:
            pdfium_c.FPDFBitmap_Destroy(bitmap)
        page.close()


def render_region(
    pdf: Any, index: int, scale: float, box: tuple[float, float, float, float], allocate: Allocate
) -> tuple[int, int, int, int]:
    """Render the part `box` (x0, y0, x1, y1 in page points, y down from the top) of page
    `index` at `scale` pixels a point, as 8-bit gray: only those pixels are drawn. Returns
    the bitmap's left and top (pixels of the whole page at `scale`), width and height."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    page = _load(pdf, index)
    bitmap = None
    try:
        left, top = math.floor(box[0] * scale), math.floor(box[1] * scale)
        width = max(1, math.ceil(box[2] * scale) - left)
        height = max(1, math.ceil(box[3] * scale) - top)
        buffer = (ctypes.c_ubyte * (width * height)).from_buffer(allocate(width, height))
        bitmap = pdfium_c.FPDFBitmap_CreateEx(
            width, height, pdfium_c.FPDFBitmap_Gray, buffer, width
        )
        if not bitmap:
            raise ScanFailed(ErrorCode.IMAGE_TOO_LARGE, "a PDF region cannot be allocated")
        pdfium_c.FPDFBitmap_FillRect(bitmap, 0, 0, width, height, 0xFFFFFFFF)
        device: Affine = (scale, 0.0, 0.0, scale, -float(left), -float(top))
        matrix = pdfium_c.FS_MATRIX(*device)
        clip = pdfium_c.FS_RECTF(0.0, 0.0, float(width), float(height))
        flags = pdfium_c.FPDF_GRAYSCALE | pdfium_c.FPDF_ANNOT
        pdfium_c.FPDF_RenderPageBitmapWithMatrix(bitmap, page, matrix, clip, flags)
        return left, top, width, height
    except pdfium.PdfiumError as exc:
        raise ScanFailed(
            ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} cannot be rendered: {exc}"
        ) from exc
    finally:
        if bitmap:
            pdfium_c.FPDFBitmap_Destroy(bitmap)
        page.close()
