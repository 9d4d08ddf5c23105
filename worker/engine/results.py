"""The typed result of a scan and its language-neutral JSON form.

`ScanResult.to_dict()` is the schema the queue, the HTTP shim and `qrw scan --json`
all emit; the README documents it field by field. Each code carries its `payload`: what its
text says as invoice or payment data (worker.schemes, docs/payloads.md), or null.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Literal

from worker.engine.errors import ErrorCode
from worker.schemes import Payload, parse

Quad = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]


class _Unparsed(Enum):
    """A code's payload before anything asked for it (None is a parsed "no known scheme");
    an enum member, so a copied code still knows it has not been parsed."""

    TOKEN = 0


_UNPARSED = _Unparsed.TOKEN


@dataclass(frozen=True, slots=True)
class Code:
    """One decoded symbol."""

    text: str
    data: bytes
    format: str
    quad: Quad
    page: int
    stage: str
    decoder: str
    variant: str = ""
    model: str | None = None
    """The detector that located the code ("qr-det-small/onnx"); None for classical stages."""
    content_type: str = ""
    symbology_identifier: str = ""
    ec_level: str = ""
    version: str = ""
    errors_corrected: int | None = None
    """Codewords Reed-Solomon corrected as errors; known for our soft decoder's reads only
    (decoder "qrw-soft"), None for zxing-cpp's, which does not say."""
    erasures: int | None = None
    """Codewords the soft decoder marked unsure and Reed-Solomon filled in as erasures."""
    # Parsed on first use and kept: a result is serialised more than once (the shim's
    # metrics and its answer), and a code the cascade drops is never parsed at all.
    _payload: Payload | _Unparsed | None = field(
        default=_UNPARSED, init=False, repr=False, compare=False
    )

    @property
    def payload(self) -> Payload | None:
        """What the code's text says as invoice or payment data; None when it is no known
        scheme. The code itself is never changed by it, whatever its checks say."""
        payload = self._payload
        if isinstance(payload, _Unparsed):
            payload = parse(self.text, self.data)
            object.__setattr__(self, "_payload", payload)
        return payload

    def to_dict(self) -> dict[str, Any]:
        payload = self.payload
        return {
            "text": self.text,
            "bytes_b64": base64.b64encode(self.data).decode("ascii"),
            "format": self.format,
            "quad": [[round(x, 1), round(y, 1)] for x, y in self.quad],
            "page": self.page,
            "stage": self.stage,
            "decoder": self.decoder,
            "variant": self.variant,
            "model": self.model,
            "content_type": self.content_type,
            "symbology_identifier": self.symbology_identifier,
            "ec_level": self.ec_level,
            "version": self.version,
            "errors_corrected": self.errors_corrected,
            "erasures": self.erasures,
            "payload": payload.to_dict() if payload is not None else None,
        }


class UnreadReason(StrEnum):
    """Why a located symbol was left unread (ScanResult.unread)."""

    DEADLINE = "deadline"
    """The deadline passed before every stage had tried it."""
    NOT_DECODED = "not_decoded"
    """Every stage of the cascade tried it and none could read it."""
    RULED_OUT = "ruled_out"
    """A detector's box that a cheaper look showed holds no code (docs/protocol.md); no
    later stage tried it, and it leaves its page complete."""


# zxing: zxing-cpp located it by three finder patterns, most often a QR code (a decoy's
# nested squares can pass too); detector: a box over the model's threshold, a code or
# something that looks like one (a DataMatrix, a logo).
LocatedBy = Literal["zxing", "detector"]


@dataclass(frozen=True, slots=True)
class Unread:
    """A symbol located on a page (by zxing, or a detector's box over its threshold) that no
    code read covers: the reason its page is not complete (but for a box `ruled_out`)."""

    quad: Quad
    page: int
    reason: UnreadReason
    located_by: LocatedBy

    def to_dict(self) -> dict[str, Any]:
        return {
            "quad": [[round(x, 1), round(y, 1)] for x, y in self.quad],
            "page": self.page,
            "reason": str(self.reason),
            "located_by": self.located_by,
        }


@dataclass(frozen=True, slots=True)
class ScanError:
    code: ErrorCode
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message}


@dataclass(slots=True)
class ScanResult:
    """Everything one scan learned about one input.

    `ok` is False only when `error` is set; finding no code is a successful, empty scan.
    `complete` is False when the deadline cut the cascade short after something was
    already read, or when a symbol located on a page was left unread (`unread` lists
    those, with why): the codes are real, but the page holds more than them.
    """

    codes: list[Code] = field(default_factory=list)
    error: ScanError | None = None
    format: str | None = None
    width: int = 0
    height: int = 0
    pages: int = 0
    complete: bool = True
    stages_run: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    unread: list[Unread] = field(default_factory=list)
    page_kinds: list[str] = field(default_factory=list)
    """A PDF's pages, each born_digital, scanned or mixed (worker.engine.pdf_pages); empty
    for other formats."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "codes": [c.to_dict() for c in self.codes],
            "error": self.error.to_dict() if self.error else None,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "pages": self.pages,
            "complete": self.complete,
            "stages_run": list(self.stages_run),
            "unread": [u.to_dict() for u in self.unread],
            "page_kinds": list(self.page_kinds),
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }
