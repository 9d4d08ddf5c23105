"""Rasterise a payload into a QR or Micro QR symbol with exact corner positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import segno

from .geometry import Quad

QR_FORMAT = "QRCode"
MICRO_QR_FORMAT = "MicroQRCode"


@dataclass(frozen=True)
class RenderedCode:
    """A symbol drawn dark-on-light (0 and 255) with its quiet zone included."""

    image: npt.NDArray[np.uint8]
    quad: Quad
    """Outer corners of the symbol proper (quiet zone excluded), TL, TR, BR, BL."""
    format: str
    version: str
    """segno's designator, e.g. "7-M" or "M3-L"."""
    modules: int
    """Symbol side in modules, quiet zone excluded."""


def make_symbol(
    payload: bytes,
    is_text: bool,
    *,
    error: str = "m",
    min_version: int | None = None,
    micro: bool = False,
    mask: int | None = None,
) -> segno.QRCode:
    """Build the segno symbol, forcing at least ``min_version`` when asked.

    Non-ASCII text goes in byte mode with a UTF-8 ECI so that decoders return
    the right characters instead of guessing Shift-JIS or Latin-1 (Micro QR
    has no ECI, so segno refuses such text there).  Binary payloads get byte
    mode without ECI, as a generic reader would expect.

    Passing ``mask`` skips segno's mask scoring, which is pure Python and
    makes encoding about 5x slower for large versions.
    """
    if micro and min_version is not None:
        raise ValueError("min_version applies to full-size QR codes only")
    content: str | bytes
    options: dict[str, object] = {"error": error, "micro": micro, "mask": mask}
    if is_text and not payload.isascii():
        content = payload.decode("utf-8")
        options.update(mode="byte", encoding="utf-8", eci=True)
    elif is_text:
        # Plain ASCII: segno may pick numeric or alphanumeric mode, which is
        # what real generators do and what decoders must handle.
        content = payload.decode("ascii")
    else:
        content = payload
        options.update(mode="byte")
    symbol = segno.make(content, **options)
    if min_version is not None and symbol.version < min_version:
        symbol = segno.make(content, version=min_version, **options)
    return symbol


def render_code(
    payload: bytes,
    is_text: bool,
    *,
    module_px: int = 4,
    quiet_zone: int | None = None,
    error: str = "m",
    min_version: int | None = None,
    micro: bool = False,
    mask: int | None = None,
) -> RenderedCode:
    """Draw ``payload`` with square ``module_px`` modules.

    ``quiet_zone`` is in modules; None means the standard 4 (QR) or 2 (Micro QR).
    """
    symbol = make_symbol(
        payload, is_text, error=error, min_version=min_version, micro=micro, mask=mask
    )
    return rasterize(symbol, module_px=module_px, quiet_zone=quiet_zone)


def rasterize(
    symbol: segno.QRCode, *, module_px: int = 4, quiet_zone: int | None = None
) -> RenderedCode:
    """Draw an already built symbol; lets callers pick the module size from its version."""
    if module_px < 1:
        raise ValueError("module_px must be at least 1")
    if quiet_zone is None:
        quiet_zone = 2 if symbol.is_micro else 4
    dark = np.asarray(symbol.matrix, dtype=bool)
    modules = dark.shape[0]
    light = np.where(dark, np.uint8(0), np.uint8(255))
    light = np.pad(light, quiet_zone, constant_values=255)
    image = np.repeat(np.repeat(light, module_px, axis=0), module_px, axis=1)
    lo = float(quiet_zone * module_px)
    hi = float((quiet_zone + modules) * module_px)
    return RenderedCode(
        image=image,
        quad=((lo, lo), (hi, lo), (hi, hi), (lo, hi)),
        format=MICRO_QR_FORMAT if symbol.is_micro else QR_FORMAT,
        version=symbol.designator,
        modules=modules,
    )
