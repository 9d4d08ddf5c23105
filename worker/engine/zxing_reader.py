"""zxing-cpp, called the way every stage needs it: QR family only, raw bytes kept,
positions mapped back to page coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Protocol

import numpy as np
import zxingcpp

from worker.engine.deadline import spend
from worker.engine.results import Quad

DECODER = f"zxing-cpp {version('zxing-cpp')}"

_QR_FORMATS = [
    zxingcpp.BarcodeFormat.QRCode,
    zxingcpp.BarcodeFormat.MicroQRCode,
    zxingcpp.BarcodeFormat.RMQRCode,
]


class PointMap(Protocol):
    def to_page(self, x: float, y: float) -> tuple[float, float]: ...


@dataclass(frozen=True, slots=True)
class Transform:
    """Maps a point of a processed image back onto the page: page = (p + offset) / scale."""

    scale: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_page(self, x: float, y: float) -> tuple[float, float]:
        return ((x + self.offset_x) / self.scale, (y + self.offset_y) / self.scale)


@dataclass(frozen=True, slots=True)
class Symbol:
    """What zxing saw: a decoded code, or (valid=False) one it located but could not read."""

    valid: bool
    text: str
    data: bytes
    format: str
    quad: Quad
    content_type: str
    symbology_identifier: str
    ec_level: str
    version: str


@dataclass(frozen=True, slots=True)
class ReadOptions:
    binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage
    try_downscale: bool = True
    try_invert: bool = True
    try_rotate: bool = True
    # The QR family by default; the Micro QR look (worker.engine.stages.micro) asks for that
    # format alone, so that a crop around a lone finder is not read as a piece of a QR code.
    formats: tuple[zxingcpp.BarcodeFormat, ...] = tuple(_QR_FORMATS)

    @property
    def work_kind(self) -> str:
        """The kind of work a read with these options is (worker.engine.deadline.WORK_COSTS,
        per pixel): each extra pass (inverted, downscaled) costs about a pass more."""
        passes = ("+invert" if self.try_invert else "") + (
            "+downscale" if self.try_downscale else ""
        )
        return f"zxing {self.binarizer.name}{passes}"


FAST = ReadOptions()


def read(gray: np.ndarray, transform: PointMap, options: ReadOptions = FAST) -> list[Symbol]:
    barcodes = zxingcpp.read_barcodes(
        gray,
        formats=list(options.formats),
        try_rotate=options.try_rotate,
        try_downscale=options.try_downscale,
        try_invert=options.try_invert,
        binarizer=options.binarizer,
        # Plain: the text as its own character set says (ECI, Shift_JIS), with no escaping.
        text_mode=zxingcpp.TextMode.Plain,
        return_errors=True,
    )
    spend(options.work_kind, gray.size)
    symbols = []
    for barcode in barcodes:
        extra = barcode.extra if isinstance(barcode.extra, dict) else {}
        if barcode.format == zxingcpp.BarcodeFormat.MicroQRCode and extra.get("Version") == "M1":
            # M1 has error detection but no correction and holds at most five digits: on
            # enhanced photos its "reads" are texture, and no invoice payload fits in it.
            continue
        pos = barcode.position
        corners = (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
        quad: Quad = tuple(transform.to_page(p.x, p.y) for p in corners)  # type: ignore[assignment]
        symbols.append(
            Symbol(
                valid=bool(barcode.valid),
                text=barcode.text,
                data=bytes(barcode.bytes),
                format=barcode.format.name,
                quad=quad,
                content_type=barcode.content_type.name,
                symbology_identifier=barcode.symbology_identifier,
                ec_level=barcode.ec_level,
                version=str(extra.get("Version", "")),
            )
        )
    return symbols
