"""Deterministic synthetic invoices carrying QR codes, with exact ground truth.

A seed in, byte-identical files out: tests, speed benchmarks, benchmark
corpora and detector training all draw from the same generator.
"""

from .degrade import DEGRADATIONS, degrade, desk_texture, random_mix
from .encode import EXTENSIONS, FORMATS, MULTI_PAGE_FORMATS, encode_pages
from .geometry import Quad, Quads
from .invoice import (
    SLOTS,
    CodeSpec,
    InvoicePage,
    PageGeometry,
    PlacedCode,
    page_geometry,
    render_invoice,
)
from .payloads import PAYLOAD_KINDS, Payload, make_payload, micro_payload
from .qrcodes import MICRO_QR_FORMAT, QR_FORMAT, RenderedCode, make_symbol, rasterize, render_code
from .samples import (
    SAMPLE_KINDS,
    Sample,
    TruthCode,
    digital_invoice,
    no_code_invoice,
    photo_invoice,
    sample_set,
)

__all__ = [
    "DEGRADATIONS",
    "EXTENSIONS",
    "FORMATS",
    "MICRO_QR_FORMAT",
    "MULTI_PAGE_FORMATS",
    "PAYLOAD_KINDS",
    "QR_FORMAT",
    "SAMPLE_KINDS",
    "SLOTS",
    "CodeSpec",
    "InvoicePage",
    "PageGeometry",
    "Payload",
    "PlacedCode",
    "Quad",
    "Quads",
    "RenderedCode",
    "Sample",
    "TruthCode",
    "degrade",
    "desk_texture",
    "digital_invoice",
    "encode_pages",
    "make_payload",
    "make_symbol",
    "micro_payload",
    "no_code_invoice",
    "page_geometry",
    "photo_invoice",
    "random_mix",
    "rasterize",
    "render_code",
    "render_invoice",
    "sample_set",
]
