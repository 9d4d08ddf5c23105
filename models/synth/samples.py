"""Complete samples: an encoded file plus the ground truth of every code in it.

Each function is a pure function of its arguments.  Randomness comes from
generators seeded with ``(seed, stream)``, so the same seed always produces
the same bytes (on the same library versions) and no global random state is
read or changed.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .degrade import degrade, random_mix
from .encode import EXTENSIONS, FORMATS, MULTI_PAGE_FORMATS, encode_pages
from .geometry import Quad, as_quads, to_quad
from .invoice import SLOTS, CodeSpec, InvoicePage, render_invoice
from .payloads import Payload, make_payload, micro_payload

SAMPLE_KINDS: tuple[str, ...] = ("digital", "photo", "none", "mixed")

# Stream ids keep the draws of different sample types independent, so that a
# digital and a photo sample with the same seed are not near-copies.
_DIGITAL, _PHOTO, _NONE, _SET = 1, 2, 3, 4


@dataclass(frozen=True)
class TruthCode:
    payload: bytes
    """Exactly the bytes encoded in the symbol (what zxing-cpp returns as ``bytes``)."""
    is_text: bool
    """If true, a decoder's text output should equal ``payload.decode("utf-8")``."""
    format: str
    """Either "QRCode" or "MicroQRCode", as zxing-cpp names them."""
    quad: Quad
    """Symbol corners (quiet zone excluded) in the page's pixel coordinates:
    the symbol's own top-left, top-right, bottom-right, bottom-left."""
    page: int
    """Zero-based page index within the file."""

    @property
    def text(self) -> str | None:
        return self.payload.decode("utf-8") if self.is_text else None


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    """The encoded file."""
    fmt: str
    """One of encode.FORMATS."""
    pages: int
    width: int
    height: int
    codes: tuple[TruthCode, ...]
    category: str
    """One of "digital", "photo" or "none"."""
    dpi: float
    """Pixels per inch of the rendered pages.  Quads on PDF pages hold when the
    PDF is rendered at ``dpi / 72`` times its size in points."""

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.fmt]

    def ground_truth(self) -> dict[str, object]:
        """JSON-ready ground truth; payloads in base64 since some are binary."""
        return {
            "name": self.name,
            "category": self.category,
            "format": self.fmt,
            "pages": self.pages,
            "width": self.width,
            "height": self.height,
            "dpi": self.dpi,
            "codes": [
                {
                    "format": code.format,
                    "page": code.page,
                    "quad": [list(point) for point in code.quad],
                    "is_text": code.is_text,
                    "payload_base64": base64.b64encode(code.payload).decode("ascii"),
                    **({"text": code.text} if code.is_text else {}),
                }
                for code in self.codes
            ],
        }


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), stream, *extra])


def _check_format(fmt: str, pages: int) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if pages < 1:
        raise ValueError("a document has at least one page")
    if pages > 1 and fmt not in MULTI_PAGE_FORMATS:
        raise ValueError(f"{fmt} holds a single page; use one of {sorted(MULTI_PAGE_FORMATS)}")


def _payload(rng: np.random.Generator, kind: str | None, micro: bool) -> Payload:
    return micro_payload(rng) if micro and kind is None else make_payload(rng, kind)


def _error_level(rng: np.random.Generator, payload: Payload, micro: bool) -> str:
    if micro:
        return "l"
    if len(payload.data) > 200:
        # Long records at level Q or H would exceed version 25 and shrink the
        # modules below what a 2-megapixel page can print legibly.
        return str(rng.choice(("l", "m")))
    return str(rng.choice(("l", "m", "q", "h"), p=(0.2, 0.5, 0.2, 0.1)))


def _truth(page: InvoicePage, index: int) -> list[TruthCode]:
    return [
        TruthCode(code.payload, code.is_text, code.format, code.quad, index) for code in page.codes
    ]


def digital_invoice(
    seed: int,
    *,
    fmt: str = "png",
    megapixels: float = 2.0,
    n_codes: int = 1,
    payload_kind: str | None = None,
    pages: int = 1,
    rotate: float = 0.0,
    invert: bool = False,
    micro: bool = False,
    min_version: int | None = None,
    color: bool = False,
    quality: int = 90,
) -> Sample:
    """A clean, born-digital invoice (as exported by accounting software).

    ``n_codes`` codes are spread over ``pages`` pages, at most four per page.
    ``rotate`` turns each symbol counter-clockwise on an upright page (any
    angle; multiples of 90 are pixel-exact).  ``invert`` prints light modules
    on a dark panel.  ``micro`` uses Micro QR with a short reference unless
    ``payload_kind`` asks for something else (which may not fit).
    ``min_version`` forces dense symbols, e.g. 15-25.
    """
    _check_format(fmt, pages)
    if not 0 <= n_codes <= len(SLOTS) * pages:
        raise ValueError(f"{n_codes} codes do not fit on {pages} page(s)")
    rng = _rng(seed, _DIGITAL)
    per_page = np.bincount(_spread(rng, n_codes, pages), minlength=pages)
    rendered = []
    for index in range(pages):
        specs = []
        for _ in range(int(per_page[index])):
            payload = _payload(rng, payload_kind, micro)
            specs.append(
                CodeSpec(
                    payload,
                    micro=micro,
                    error=_error_level(rng, payload, micro),
                    min_version=min_version,
                    angle=rotate,
                    invert=invert,
                )
            )
        rendered.append(
            render_invoice(
                rng,
                specs,
                megapixels=megapixels,
                color=color,
                page_index=index,
                page_count=pages,
            )
        )
    truth = [code for index, page in enumerate(rendered) for code in _truth(page, index)]
    return _sample(f"digital-{seed}", rendered, truth, fmt, quality, "digital")


def _spread(rng: np.random.Generator, n_codes: int, pages: int) -> list[int]:
    """A page index per code, never more codes on a page than it has slots."""
    free = [len(SLOTS)] * pages
    chosen = []
    for _ in range(n_codes):
        candidates = [p for p in range(pages) if free[p] > 0]
        page = candidates[int(rng.integers(len(candidates)))]
        free[page] -= 1
        chosen.append(page)
    return chosen


def _sample(
    name: str,
    rendered: Sequence[InvoicePage],
    truth: Sequence[TruthCode],
    fmt: str,
    quality: int,
    category: str,
) -> Sample:
    images = [page.image for page in rendered]
    height, width = images[0].shape[:2]
    dpi = rendered[0].dpi
    return Sample(
        name=name,
        data=encode_pages(images, fmt, dpi=dpi, quality=quality),
        fmt=fmt,
        pages=len(images),
        width=width,
        height=height,
        codes=tuple(truth),
        category=category,
        dpi=dpi,
    )


def photo_invoice(
    seed: int,
    *,
    fmt: str = "jpeg",
    degradations: Sequence[str] | None = None,
    strength: float = 0.3,
    n_codes: int = 1,
    payload_kind: str | None = None,
    megapixels: float = 2.0,
    micro: bool = False,
    color: bool | None = None,
    quality: int = 85,
) -> Sample:
    """A phone photo of a printed invoice.

    ``degradations`` names entries of degrade.DEGRADATIONS, applied in their
    canonical (physical) order; None draws a random mix that always includes
    a perspective view onto a desk.  ``strength`` in [0, 1]: with random
    mixes about 90% of codes still decode at 0.3, half at 0.5, and only one in
    four at 0.8; the unreadable ones are meant for training a detector.  The
    photo keeps the page's pixel count (a 3:4 frame when "perspective" is
    applied).
    """
    _check_format(fmt, 1)
    if not 0 <= n_codes <= len(SLOTS):
        raise ValueError(f"at most {len(SLOTS)} codes fit on a page")
    rng = _rng(seed, _PHOTO)
    specs = []
    for _ in range(n_codes):
        payload = _payload(rng, payload_kind, micro)
        specs.append(CodeSpec(payload, micro=micro, error=_error_level(rng, payload, micro)))
    if color is None:
        color = bool(rng.random() < 0.5)
    page = render_invoice(rng, specs, megapixels=megapixels, color=color)
    names = random_mix(rng) if degradations is None else tuple(degradations)
    image, quads = degrade(page.image, as_quads([c.quad for c in page.codes]), rng, names, strength)
    photo = InvoicePage(image, page.codes, page.dpi)
    truth = [
        dataclasses.replace(code, quad=to_quad(quad))
        for code, quad in zip(_truth(photo, 0), quads, strict=True)
    ]
    return _sample(f"photo-{seed}", [photo], truth, fmt, quality, "photo")


def no_code_invoice(
    seed: int,
    *,
    fmt: str = "png",
    megapixels: float = 2.0,
    photo: bool = False,
    strength: float = 0.3,
    quality: int = 90,
) -> Sample:
    """An invoice without any code: the negative case a reader must not hallucinate on."""
    _check_format(fmt, 1)
    rng = _rng(seed, _NONE)
    page = render_invoice(rng, (), megapixels=megapixels, color=bool(rng.random() < 0.5))
    if photo:
        image, _ = degrade(page.image, as_quads([]), rng, random_mix(rng), strength)
        page = InvoicePage(image, (), page.dpi)
    return _sample(f"none-{seed}", [page], [], fmt, quality, "none")


def sample_set(seed: int, count: int, kind: str) -> list[Sample]:
    """``count`` varied samples of ``kind`` ("digital", "photo", "none" or "mixed").

    Options (format, code count, payload kind, rotation, density...) are drawn
    per sample, so a set exercises the whole generator.  Names are
    ``{seed}-{index:04d}-{category}`` and unique within a set.
    """
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {SAMPLE_KINDS}")
    if count < 0:
        raise ValueError("count must not be negative")
    samples = []
    for index in range(count):
        rng = _rng(seed, _SET, index)
        item_kind = kind
        if kind == "mixed":
            item_kind = str(rng.choice(("digital", "photo", "none"), p=(0.5, 0.35, 0.15)))
        item_seed = int(rng.integers(2**31))
        if item_kind == "digital":
            sample = _random_digital(rng, item_seed)
        elif item_kind == "photo":
            sample = _random_photo(rng, item_seed)
        else:
            fmt = str(rng.choice(("png", "jpeg", "pdf", "webp")))
            sample = no_code_invoice(item_seed, fmt=fmt, photo=bool(rng.random() < 0.4))
        samples.append(dataclasses.replace(sample, name=f"{seed}-{index:04d}-{sample.category}"))
    return samples


def _random_digital(rng: np.random.Generator, seed: int) -> Sample:
    fmt = str(
        rng.choice(FORMATS, p=_weights(FORMATS, png=6, jpeg=4, pdf=5, webp=2, tiff=1, bmp=1, gif=1))
    )
    pages = 1 if fmt not in MULTI_PAGE_FORMATS or rng.random() < 0.7 else int(rng.integers(2, 4))
    micro = bool(rng.random() < 0.05)
    dense = not micro and rng.random() < 0.1
    rotate = 0.0
    if rng.random() < 0.2:
        rotate = float(rng.choice((90.0, 180.0, 270.0, float(rng.uniform(-12.0, 12.0)))))
    return digital_invoice(
        seed,
        fmt=fmt,
        megapixels=float(rng.choice((1.5, 2.0, 2.0, 3.0, 4.0))),
        n_codes=int(rng.choice((1, 2, 3), p=(0.75, 0.2, 0.05))),
        pages=pages,
        rotate=rotate,
        micro=micro,
        min_version=int(rng.integers(15, 26)) if dense else None,
        color=bool(rng.random() < 0.5),
    )


def _random_photo(rng: np.random.Generator, seed: int) -> Sample:
    fmt = str(rng.choice(("jpeg", "png", "webp"), p=(0.8, 0.1, 0.1)))
    return photo_invoice(
        seed,
        fmt=fmt,
        strength=float(rng.uniform(0.1, 0.9)),
        n_codes=int(rng.choice((1, 2), p=(0.85, 0.15))),
    )


def _weights(names: Sequence[str], **weights: float) -> list[float]:
    total = sum(weights[name] for name in names)
    return [weights[name] / total for name in names]
