"""Encode rendered pages into image or PDF file bytes, reproducibly.

Every writer here is deterministic for a given Pillow build: none of them
stores a timestamp except Pillow's PDF writer, whose CreationDate and ModDate
are suppressed explicitly.  Lossy formats (JPEG, WebP, and PDF, which embeds
each page as a JPEG) are byte-identical across runs on the same libraries, but
a different libjpeg or libwebp may change bytes, so tests that must hold
everywhere compare decoded pixels of lossless formats instead.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "bmp", "gif", "tiff", "pdf")
MULTI_PAGE_FORMATS: frozenset[str] = frozenset({"tiff", "pdf"})
EXTENSIONS: dict[str, str] = {
    "png": "png",
    "jpeg": "jpg",
    "webp": "webp",
    "bmp": "bmp",
    "gif": "gif",
    "tiff": "tif",
    "pdf": "pdf",
}


def to_pil(image: npt.NDArray[np.uint8]) -> Image.Image:
    """Grayscale stays single-channel ("L"); BGR from OpenCV becomes RGB."""
    if image.ndim == 2:
        return Image.fromarray(image, mode="L")
    return Image.fromarray(np.ascontiguousarray(image[..., ::-1]), mode="RGB")


def encode_pages(
    pages: Sequence[npt.NDArray[np.uint8]],
    fmt: str,
    *,
    dpi: float = 150.0,
    quality: int = 90,
) -> bytes:
    """Write ``pages`` as one file of format ``fmt``.

    ``dpi`` is recorded where the format has a field for it; for PDF it sets
    the page size, so rendering at ``dpi / 72`` scale reproduces the pixels'
    geometry and the ground-truth quads apply unchanged.  ``quality`` applies
    to JPEG, WebP and the JPEG streams inside a PDF.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if not pages:
        raise ValueError("nothing to encode")
    if len(pages) > 1 and fmt not in MULTI_PAGE_FORMATS:
        raise ValueError(f"{fmt} holds a single page; use one of {sorted(MULTI_PAGE_FORMATS)}")
    images = [to_pil(page) for page in pages]
    if fmt == "gif":
        # Pillow's default palette reduction (median cut) takes over 100 ms
        # on a 2-megapixel colour page; fast octree is 6x quicker and
        # undithered keeps module edges crisp.
        images = [
            im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
            if im.mode == "RGB"
            else im
            for im in images
        ]
    first, rest = images[0], images[1:]
    options: dict[str, object] = {}
    if fmt == "png":
        # Level 1 is several times faster than the default and barely larger
        # on flat invoice pages.
        options = {"compress_level": 1, "dpi": (dpi, dpi)}
    elif fmt == "jpeg":
        options = {"quality": quality, "dpi": (round(dpi), round(dpi))}
    elif fmt == "webp":
        # method 2 is about twice as fast as the default 4 at similar size.
        options = {"quality": quality, "method": 2}
    elif fmt == "bmp":
        options = {"dpi": (dpi, dpi)}
    elif fmt == "tiff":
        options = {"compression": "tiff_adobe_deflate", "dpi": (dpi, dpi)}
    elif fmt == "pdf":
        options = {
            "resolution": dpi,
            "quality": quality,
            # Pillow stamps the current time into these unless told otherwise;
            # a None value makes it leave the entry out.
            "creationDate": None,
            "modDate": None,
            "title": None,
        }
    if rest:
        options.update(save_all=True, append_images=rest)
    buffer = io.BytesIO()
    first.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()
