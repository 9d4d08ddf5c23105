"""Every configuration the benchmark compares, behind one small interface.

A reader is loaded once (that is what "start-to-ready" times) and then reads file
bytes into a list of `Read`s. Peers are optional extras (`pip install .[bench]`): one
that cannot be imported or constructed raises `Absent` and is reported as absent,
never as a zero score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


class Absent(Exception):
    """The reader's library is not installed or cannot start here."""


@dataclass(frozen=True, slots=True)
class Read:
    data: bytes | None  # exact bytes when the reader exposes them
    text: str | None
    quad: tuple[tuple[float, float], ...] | None
    stage: str = ""


Reader = Callable[[bytes], list[Read]]


def _gray(data: bytes) -> np.ndarray:
    """Peers get the page the way their users would give it: decoded full size by OpenCV.
    PDFs are rasterised by our own loader (the peers cannot read PDF at all)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        from worker.engine.images import open_document
        from worker.settings import Settings

        try:
            document = open_document(data, Settings())
            image = document.pages[0].gray()[0]
        except Exception:
            return np.zeros((1, 1), np.uint8)
    return image


def _cascade(backend: str) -> Reader:
    from worker.engine import Engine
    from worker.engine.detector.sessions import ModelUnavailable
    from worker.settings import Settings

    try:
        engine = Engine(Settings.from_env().replace(backend=backend))
    except ModelUnavailable as exc:
        raise Absent(str(exc)) from exc
    engine.warm_up()

    def read(data: bytes) -> list[Read]:
        return [Read(c.data, c.text, c.quad, c.stage) for c in engine.scan(data).codes]

    return read


def _zxing() -> Reader:
    import zxingcpp

    formats = (zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode)

    def read(data: bytes) -> list[Read]:
        found = zxingcpp.read_barcodes(
            _gray(data), formats=formats, text_mode=zxingcpp.TextMode.Plain
        )
        return [
            Read(
                bytes(b.bytes),
                b.text,
                tuple(
                    (p.x, p.y)
                    for p in (
                        b.position.top_left,
                        b.position.top_right,
                        b.position.bottom_right,
                        b.position.bottom_left,
                    )
                ),
            )
            for b in found
        ]

    return read


def _opencv(aruco: bool) -> Reader:
    detector = cv2.QRCodeDetectorAruco() if aruco else cv2.QRCodeDetector()

    def read(data: bytes) -> list[Read]:
        try:
            ok, texts, points, _ = detector.detectAndDecodeMulti(_gray(data))
        except cv2.error:
            return []
        if not ok:
            return []
        return [
            Read(None, text, tuple(map(tuple, quad.tolist())))
            for text, quad in zip(texts, points, strict=False)
            if text
        ]

    return read


def _pyzbar() -> Reader:
    try:
        from pyzbar import pyzbar
    except (ImportError, OSError) as exc:  # OSError: the libzbar shared library is missing
        raise Absent(f"pyzbar: {exc}") from exc

    def read(data: bytes) -> list[Read]:
        found = pyzbar.decode(_gray(data), symbols=[pyzbar.ZBarSymbol.QRCODE])
        return [
            Read(bytes(s.data), None, tuple((float(p.x), float(p.y)) for p in s.polygon))
            for s in found
        ]

    return read


def _arbez() -> Reader:
    try:
        from arbez import Scanner

        scanner = Scanner("arbez")
        scanner.warmup()
    except Exception as exc:
        raise Absent(f"arbez: {exc}") from exc

    def read(data: bytes) -> list[Read]:
        result = scanner.scan(data)
        reads = []
        for detection in result.detections:
            payload = detection.payload
            if payload is None or "qr" not in str(detection.symbology.value).lower():
                continue
            raw = payload if isinstance(payload, bytes) else None
            text = payload if isinstance(payload, str) else None
            polygon = tuple(map(tuple, detection.polygon)) if detection.polygon else None
            reads.append(Read(raw, text, polygon))
        return reads

    return read


READERS: dict[str, Callable[[], Reader]] = {
    "cascade (classical)": lambda: _cascade("none"),
    "cascade (onnx)": lambda: _cascade("onnx"),
    "cascade (torch)": lambda: _cascade("torch"),
    "zxing-cpp": _zxing,
    "opencv": lambda: _opencv(aruco=False),
    "opencv-aruco": lambda: _opencv(aruco=True),
    "pyzbar": _pyzbar,
    "arbez": _arbez,
}


def load(name: str) -> Reader:
    try:
        factory = READERS[name]
    except KeyError:
        raise Absent(f"unknown reader {name!r}") from None
    try:
        return factory()
    except Absent:
        raise
    except (ImportError, OSError) as exc:
        raise Absent(f"{name}: {exc}") from exc
