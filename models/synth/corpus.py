"""A deterministic benchmark corpus: named categories of invoices with exact ground truth.

Each category isolates one reason a reader fails.  ``digital`` holds clean
renders; the photo categories put one degradation, at a spread of strengths
(mostly moderate, some severe), on top of a mild phone-photo base (a slight
tilt, uneven light, lens softness, sensor noise, JPEG); ``dense``, ``multi``
and ``none`` vary the content instead; ``lowres`` (photos shrunk by an upload
pipeline, several codes at 2-4 pixels per module) and ``multi_digital`` (clean
pages with a dense code beside smaller ones) are the pages issue 19 found
codes lost on.  Strengths are set in the code's own
units (pixels per module, share of the symbol) so that zxing-cpp alone reads
roughly a third to four fifths of each photo category: hard enough to leave a
better pipeline room, easy enough not to be noise.

``corpus_sample(category, index, seed=...)`` is a pure function: the same
arguments give the same bytes (on the same library versions), and samples do
not depend on each other, so any slice of the corpus can be regenerated alone.

Run ``python -m models.synth.corpus OUTDIR`` to write a corpus folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from . import effects
from .__main__ import write_sample
from .camera import Bend, Pose, max_bend, photograph, photograph_bent, posed_quads
from .damage import DAMAGES
from .decoys import draw_decoy
from .encode import encode_pages
from .geometry import Quads, as_quads, to_quad
from .invoice import CodeSpec, PlacedCode, render_invoice
from .payloads import Payload, make_payload, micro_payload
from .qrcodes import make_symbol
from .samples import Sample, TruthCode

CATEGORIES: tuple[str, ...] = (
    "digital",
    "blurred",
    "motion",
    "perspective",
    "rotated",
    "small",
    "low_contrast",
    "glare",
    "shadow",
    "noisy_jpeg",
    "curved",
    "damaged",
    "dense",
    "multi",
    "none",
    "lowres",
    "multi_digital",
)

_STREAM = 5  # keeps corpus draws apart from samples.py's streams 1-4
_SEVERE_SHARE = 0.3  # of photo samples drawn at a severe strength

Image = npt.NDArray[np.uint8]
Condition = str | float | int


@dataclass(frozen=True)
class CorpusCode(TruthCode):
    """A ground-truth code with what a benchmark breaks results down by."""

    version: str = ""
    """segno's designator, e.g. "17-L" or "M3-L"."""
    modules: int = 0
    """Symbol side in modules."""
    module_px: float = 0.0
    """Mean module size in the final image, in pixels."""


@dataclass(frozen=True)
class CorpusSample(Sample):
    conditions: tuple[tuple[str, Condition], ...] = ()
    """How the sample was degraded: strength, blur sigma, damage kinds..."""

    def ground_truth(self) -> dict[str, object]:
        truth = super().ground_truth()
        codes = cast(list[dict[str, object]], truth["codes"])
        for entry, code in zip(codes, self.codes, strict=True):
            if isinstance(code, CorpusCode):
                entry.update(
                    version=code.version, modules=code.modules, module_px=round(code.module_px, 3)
                )
        truth["conditions"] = dict(self.conditions)
        return truth


# --- public API --------------------------------------------------------------------------------


def corpus_sample(category: str, index: int, *, seed: int = 0) -> CorpusSample:
    """Sample ``index`` of ``category``, named ``f"{category}-{index:04d}"``."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    for label, value in (("index", index), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
    # crc32 rather than the position in CATEGORIES: adding a category later
    # must not change the samples of the existing ones.
    key = zlib.crc32(category.encode("ascii"))
    rng = np.random.default_rng([int(seed), _STREAM, key, int(index)])
    return _BUILDERS[category](rng, f"{category}-{index:04d}")


def corpus(
    categories: Iterable[str] | None = None, per_category: int = 100, seed: int = 0
) -> Iterator[CorpusSample]:
    """All samples, category by category, generated lazily (arguments are checked at once)."""
    names = _check_categories(categories)
    if per_category < 0:
        raise ValueError("per_category must not be negative")
    return _generate(names, per_category, seed)


def _generate(names: Sequence[str], per_category: int, seed: int) -> Iterator[CorpusSample]:
    for category in names:
        for index in range(per_category):
            yield corpus_sample(category, index, seed=seed)


def write_corpus(
    folder: str | Path,
    categories: Iterable[str] | None = None,
    per_category: int = 100,
    seed: int = 0,
) -> list[Path]:
    """Write ``name.ext``, ``name.json`` and, for one text code, ``name.txt`` per sample."""
    outdir = Path(folder)
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for sample in corpus(categories, per_category, seed):
        written.extend(write_sample(sample, outdir))
    return written


def _check_categories(categories: Iterable[str] | None) -> tuple[str, ...]:
    names = CATEGORIES if categories is None else tuple(categories)
    if unknown := [name for name in names if name not in CATEGORIES]:
        raise ValueError(f"unknown categories {unknown}; expected some of {CATEGORIES}")
    return names


# --- scene bookkeeping -------------------------------------------------------------------------


@dataclass
class _Scene:
    """A page on its way to becoming a photo, with its codes' quads kept in step."""

    image: Image
    quads: Quads
    placed: tuple[PlacedCode, ...]
    page_dpi: float
    conditions: dict[str, Condition] = field(default_factory=dict)
    page_pixels: int = 0

    def __post_init__(self) -> None:
        self.page_pixels = self.image.shape[0] * self.image.shape[1]

    @property
    def dpi(self) -> float:
        """Pixels per inch of the paper as it appears now (a photo shrinks or grows it)."""
        if self.placed:
            printed = np.array([code.module_px for code in self.placed], np.float64)
            return self.page_dpi * float(np.mean(self.module_px() / printed))
        pixels = self.image.shape[0] * self.image.shape[1]
        return self.page_dpi * float(np.sqrt(pixels / self.page_pixels))

    @property
    def modules(self) -> npt.NDArray[np.float64]:
        return np.array([_modules(code.version) for code in self.placed], np.float64)

    def module_px(self) -> npt.NDArray[np.float64]:
        """Mean module size of each code in the current image."""
        if not self.placed:
            return np.zeros(0)
        sides = np.linalg.norm(self.quads - np.roll(self.quads, -1, axis=1), axis=2).mean(axis=1)
        return sides / self.modules

    def smallest_module(self) -> float:
        """The hardest code's module size; a typical print's 3 pixels on a page without codes."""
        sizes = self.module_px()
        return float(sizes.min()) if len(sizes) else 3.0

    def note(self, **values: Condition) -> None:
        for key, value in values.items():
            self.conditions[key] = round(value, 3) if isinstance(value, float) else value


def _modules(designator: str) -> int:
    """Side in modules from segno's designator: "7-M" is 45, "M3-L" is 15."""
    version = designator.split("-")[0]
    if version.startswith("M"):
        return 9 + 2 * int(version[1:])
    return 17 + 4 * int(version)


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _strength(rng: np.random.Generator) -> float:
    """Mostly moderate, some severe."""
    if rng.random() < _SEVERE_SHARE:
        return float(rng.uniform(0.7, 1.0))
    return float(rng.uniform(0.1, 0.7))


def _error_level(rng: np.random.Generator, payload: Payload, micro: bool) -> str:
    if micro:
        return "l"
    if len(payload.data) > 200:
        # Q or H would push long records past version 25.
        return str(rng.choice(("l", "m")))
    return str(rng.choice(("l", "m", "q", "h"), p=(0.2, 0.45, 0.2, 0.15)))


def _specs(rng: np.random.Generator, count: int, *, micro_share: float = 0.0) -> list[CodeSpec]:
    specs = []
    for _ in range(count):
        micro = bool(rng.random() < micro_share)
        payload = micro_payload(rng) if micro else make_payload(rng)
        specs.append(CodeSpec(payload, micro=micro, error=_error_level(rng, payload, micro)))
    return specs


def _page(
    rng: np.random.Generator,
    specs: Sequence[CodeSpec],
    *,
    megapixels: float | None = None,
    dpi: float | None = None,
    paper: str = "a4",
) -> _Scene:
    page = render_invoice(
        rng,
        specs,
        paper=paper,
        megapixels=megapixels,
        dpi=dpi,
        color=bool(rng.random() < 0.5),
    )
    return _Scene(page.image, as_quads([c.quad for c in page.codes]), page.codes, page.dpi)


def _photo_page(rng: np.random.Generator, specs: Sequence[CodeSpec]) -> _Scene:
    """A page meant to be photographed, at a phone-photo pixel count."""
    return _page(rng, specs, megapixels=float(rng.uniform(1.6, 2.6)))


def _mild_pose(rng: np.random.Generator, **changes: object) -> Pose:
    """A casual phone shot: nearly square-on, page filling most of the frame."""
    tilt = np.clip(rng.normal(0.0, 5.0, size=2), -12.0, 12.0)
    pose = Pose(
        pitch=float(tilt[0]),
        yaw=float(tilt[1]),
        roll=float(rng.uniform(-4.0, 4.0)),
        distance=float(rng.uniform(1.2, 2.0)),
        fill=float(rng.uniform(0.82, 0.95)),
        shift=(float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.6, 0.6))),
    )
    return dataclasses.replace(pose, **changes)


def _snap(
    rng: np.random.Generator, scene: _Scene, pose: Pose, *, scale: float | None = None
) -> None:
    scene.image, scene.quads = photograph(scene.image, scene.quads, rng, pose, scale=scale)
    scene.note(pitch=pose.pitch, yaw=pose.yaw, roll=pose.roll)


def _scale_for(scene: _Scene, pose: Pose, target: float) -> float:
    """The photo scale that gives the scene's largest code ``target`` pixels per module.

    Foreshortening changes module sizes beyond the plain page-to-photo
    scale, so the pose is worked out once at scale 1 and scaled from there.
    """
    h, w = scene.image.shape[:2]
    quads = posed_quads(w, h, scene.quads, pose, scale=1.0)
    sides = np.linalg.norm(quads - np.roll(quads, -1, axis=1), axis=2).mean(axis=1)
    return target / float((sides / scene.modules).max())


def _room_light(rng: np.random.Generator, scene: _Scene) -> None:
    """Uneven indoor light on half the photos: a gentle gradient, nothing a reader minds."""
    if rng.random() < 0.5:
        gain = float(rng.uniform(0.05, 0.3))
        h, w = scene.image.shape[:2]
        ys, xs = np.mgrid[0:8, 0:8].astype(np.float32) / 7
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5) + 0.5
        light = cv2.resize((1.0 - gain * ramp).astype(np.float32), (w, h))
        if scene.image.ndim == 3:
            light = cv2.merge([light] * 3)
        scene.image = cv2.multiply(scene.image, light, dtype=cv2.CV_8U)


def _finish(
    rng: np.random.Generator,
    scene: _Scene,
    name: str,
    category: str,
    *,
    noise: float | None = None,
    quality: int | None = None,
) -> CorpusSample:
    """A phone lens's slight softness, sensor noise and the JPEG, then the sample."""
    # No phone photo is pixel-sharp: the lens and demosaicing blur a little.
    softness = float(rng.uniform(0.3, 0.7))
    sigma = float(rng.uniform(2.0, 5.0)) if noise is None else noise
    quality = int(rng.integers(70, 93)) if quality is None else quality
    scene.image = effects.grain(effects.defocus(scene.image, softness), sigma, rng)
    scene.note(lens_sigma_px=softness, noise_sigma=sigma, jpeg_quality=quality)
    return _assemble(scene, name, category, "jpeg", quality)


def _assemble(scene: _Scene, name: str, category: str, fmt: str, quality: int) -> CorpusSample:
    height, width = scene.image.shape[:2]
    sizes = scene.module_px()
    codes = tuple(
        CorpusCode(
            payload=code.payload,
            is_text=code.is_text,
            format=code.format,
            quad=to_quad(quad),
            page=0,
            version=code.version,
            modules=_modules(code.version),
            module_px=float(size),
        )
        for code, quad, size in zip(scene.placed, scene.quads, sizes, strict=True)
    )
    return CorpusSample(
        name=name,
        data=encode_pages([scene.image], fmt, dpi=scene.dpi, quality=quality),
        fmt=fmt,
        pages=1,
        width=width,
        height=height,
        codes=codes,
        category=category,
        dpi=scene.dpi,
        conditions=tuple(sorted(scene.conditions.items())),
    )


def _target(scene: _Scene, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """The quad of one of the scene's codes, chosen at random."""
    return scene.quads[int(rng.integers(len(scene.placed)))]


# --- categories --------------------------------------------------------------------------------

Builder = Callable[[np.random.Generator, str], CorpusSample]


def _digital(rng: np.random.Generator, name: str) -> CorpusSample:
    """Born-digital exports and clean scans: PNG, JPEG or PDF at 150-300 DPI."""
    fmt = str(rng.choice(("png", "jpeg", "pdf")))
    dpi = float(rng.choice((150, 200, 240, 300)))
    paper = "letter" if rng.random() < 0.25 else "a4"
    specs = _specs(rng, 1 if rng.random() < 0.8 else 2, micro_share=0.05)
    # Scanners and exports sometimes deliver the page sideways or upside down.
    turn = float(90 * rng.choice(4, p=(0.85, 0.05, 0.05, 0.05)))
    specs = [dataclasses.replace(spec, angle=turn) for spec in specs]
    scene = _page(rng, specs, dpi=dpi, paper=paper)
    scene.note(dpi=dpi, paper=paper, code_angle=turn)
    return _assemble(scene, name, "digital", fmt, int(rng.integers(80, 96)))


def _blurred(rng: np.random.Generator, name: str) -> CorpusSample:
    """Defocus: Gaussian blur with a sigma of 0.15 to 0.7 modules."""
    scene = _photo_page(rng, _specs(rng, 1))
    _snap(rng, scene, _mild_pose(rng))
    _room_light(rng, scene)
    strength = _strength(rng)
    sigma = _lerp(0.15, 0.7, strength) * scene.smallest_module()
    scene.image = effects.defocus(scene.image, sigma)
    scene.note(strength=strength, blur_sigma_px=sigma)
    return _finish(rng, scene, name, "blurred")


def _motion(rng: np.random.Generator, name: str) -> CorpusSample:
    """Camera shake: a straight smear of 0.6 to 2.6 modules in any direction."""
    scene = _photo_page(rng, _specs(rng, 1))
    _snap(rng, scene, _mild_pose(rng))
    _room_light(rng, scene)
    strength = _strength(rng)
    length = _lerp(0.6, 2.6, strength) * scene.smallest_module()
    angle = float(rng.uniform(0, np.pi))
    scene.image = effects.motion(scene.image, length, angle)
    scene.note(strength=strength, motion_px=length, motion_angle=float(np.rad2deg(angle)))
    return _finish(rng, scene, name, "motion")


def _perspective(rng: np.random.Generator, name: str) -> CorpusSample:
    """A steep, close shot: the page tilted 45 to 78 degrees away from the camera."""
    scene = _photo_page(rng, _specs(rng, 1))
    strength = _strength(rng)
    tilt = _lerp(45.0, 78.0, strength)
    direction = rng.uniform(0, 2 * np.pi)
    pose = _mild_pose(
        rng,
        pitch=float(tilt * np.cos(direction)),
        yaw=float(tilt * np.sin(direction)),
        roll=float(rng.uniform(-20, 20)),
        distance=float(rng.uniform(0.8, 1.3)),
        fill=float(rng.uniform(0.9, 0.98)),
    )
    _snap(rng, scene, pose)
    _room_light(rng, scene)
    scene.note(strength=strength, tilt=tilt)
    return _finish(rng, scene, name, "perspective")


def _rotated(rng: np.random.Generator, name: str) -> CorpusSample:
    """The page at any angle in the frame, quarter turns included.

    Readers are blind to rotation at large module sizes, so the page is shot
    from a little farther away (1.5 to 2.3 pixels per module), where modules
    that no longer line up with the pixel grid start to blur into each other.
    """
    scene = _photo_page(rng, _specs(rng, 1))
    if rng.random() < 0.2:
        roll = float(90 * rng.integers(1, 4) + rng.uniform(-3, 3))
    else:
        roll = float(rng.uniform(0, 360))
    strength = _strength(rng)
    target = _lerp(2.3, 1.5, strength)
    pose = _mild_pose(rng, roll=roll, fill=float(rng.uniform(0.6, 0.95)))
    _snap(rng, scene, pose, scale=_scale_for(scene, pose, target))
    _room_light(rng, scene)
    scene.note(strength=strength, module_target_px=target)
    return _finish(rng, scene, name, "rotated")


def _small(rng: np.random.Generator, name: str) -> CorpusSample:
    """A far-away or thumbnail-sized shot: 1.2 to 2 pixels per module."""
    scene = _photo_page(rng, _specs(rng, 1))
    strength = _strength(rng)
    target = _lerp(2.0, 1.2, strength)
    pose = _mild_pose(rng, fill=float(rng.uniform(0.5, 0.95)))
    _snap(rng, scene, pose, scale=_scale_for(scene, pose, target))
    _room_light(rng, scene)
    scene.note(strength=strength, module_target_px=target)
    return _finish(rng, scene, name, "small")


def _low_contrast(rng: np.random.Generator, name: str) -> CorpusSample:
    """Faded toner or a hazy, badly exposed shot: 3 to 15 percent of the contrast left."""
    scene = _photo_page(rng, _specs(rng, 1))
    strength = _strength(rng)
    keep = _lerp(0.15, 0.03, strength)
    faded = bool(rng.random() < 0.5)
    if faded:
        scene.image = effects.fade(scene.image, keep)
    _snap(rng, scene, _mild_pose(rng))
    _room_light(rng, scene)
    if not faded:
        scene.image = effects.contrast(scene.image, keep, float(rng.uniform(90, 190)))
    scene.note(strength=strength, contrast_kept=keep, cause="faded print" if faded else "haze")
    return _finish(rng, scene, name, "low_contrast")


def _glare(rng: np.random.Generator, name: str) -> CorpusSample:
    """A specular highlight on glossy paper, over part of the code."""
    scene = _photo_page(rng, _specs(rng, 1))
    _snap(rng, scene, _mild_pose(rng))
    _room_light(rng, scene)
    strength = _strength(rng)
    quad = _target(scene, rng)
    side = float(np.linalg.norm(quad[1] - quad[0]))
    centre = quad.mean(axis=0) + rng.uniform(-0.45, 0.45, size=2) * side
    size = side * _lerp(0.2, 0.5, strength)
    radii = (size, size * float(rng.uniform(0.4, 1.0)))
    peak = _lerp(0.55, 1.0, strength)
    angle = float(rng.uniform(0, np.pi))
    scene.image = effects.specular(scene.image, centre, radii, angle, peak)
    scene.note(strength=strength, glare_radius=size / side, glare_peak=peak)
    return _finish(rng, scene, name, "glare")


def _shadow(rng: np.random.Generator, name: str) -> CorpusSample:
    """The phone's or a hand's shadow with its edge across the code."""
    scene = _photo_page(rng, _specs(rng, 1))
    _snap(rng, scene, _mild_pose(rng))
    _room_light(rng, scene)
    strength = _strength(rng)
    quad = _target(scene, rng)
    side = float(np.linalg.norm(quad[1] - quad[0]))
    through = quad.mean(axis=0) + rng.uniform(-0.3, 0.3, size=2) * side
    darkness = _lerp(0.6, 0.92, strength)
    softness = side * float(rng.uniform(0.0, 0.1))
    bend = float(rng.normal(0, 0.15)) * max(scene.image.shape[:2])
    angle = float(rng.uniform(0, 2 * np.pi))
    scene.image = effects.cast_shadow(scene.image, through, angle, darkness, softness, bend)
    scene.note(strength=strength, shadow_darkness=darkness, shadow_edge_px=softness)
    return _finish(rng, scene, name, "shadow")


def _noisy_jpeg(rng: np.random.Generator, name: str) -> CorpusSample:
    """A dim, grainy shot sent through a messenger: heavy noise, resized, low JPEG quality."""
    scene = _photo_page(rng, _specs(rng, 1))
    _snap(rng, scene, _mild_pose(rng))
    _room_light(rng, scene)
    strength = _strength(rng)
    # Underexposed, then brightened by the phone: the gain amplifies the grain.
    exposure = _lerp(0.5, 0.2, strength)
    sigma = _lerp(8.0, 16.0, strength)
    quality = round(_lerp(30.0, 5.0, strength * float(rng.uniform(0.7, 1.0))))
    # Messengers cap the long side (1280 to 1600 pixels) before recompressing.
    long_side = float(rng.uniform(1280, 1600))
    factor = min(1.0, long_side / max(scene.image.shape[:2]))
    blotch = _lerp(0.6, 1.2, strength) * scene.smallest_module() / 3
    dim = effects.grain(cv2.convertScaleAbs(scene.image, alpha=exposure), sigma, rng, blotch)
    scene.image = cv2.convertScaleAbs(dim, alpha=1.0 / exposure)
    scene.image = effects.jpeg_pass(scene.image, int(rng.integers(70, 90)))
    scene.image, points = effects.resize(scene.image, scene.quads.reshape(-1, 2), factor)
    scene.quads = points.reshape(scene.quads.shape)
    scene.note(strength=strength, exposure=exposure, effective_noise_sigma=sigma / exposure)
    return _finish(rng, scene, name, "noisy_jpeg", noise=1.0, quality=quality)


def _curved(rng: np.random.Generator, name: str) -> CorpusSample:
    """A page bent around a cylinder: curling off the desk or held in a hand."""
    scene = _photo_page(rng, _specs(rng, 1))
    strength = _strength(rng)
    bend = Bend(
        angle=_lerp(40.0, 80.0, strength),
        crest=float(rng.uniform(0.25, 0.75)),
        vertical=bool(rng.random() < 0.6),
        toward=bool(rng.random() < 0.4),
        shading=float(rng.uniform(0.0, 0.35)),
    )
    pose = _mild_pose(rng, distance=float(rng.uniform(0.6, 1.2)))
    h, w = scene.image.shape[:2]
    # Bent away from a close camera, a steep bend would hide the far edge.
    bend = dataclasses.replace(bend, angle=min(bend.angle, max_bend(w, h, bend, pose.distance)))
    scene.image, scene.quads = photograph_bent(
        scene.image, scene.quads, rng, pose, bend, megapixels=scene.page_pixels / 1e6
    )
    _room_light(rng, scene)
    scene.note(
        strength=strength,
        bend_angle=bend.angle,
        bend_axis="vertical" if bend.vertical else "horizontal",
        bend_toward_camera=int(bend.toward),
    )
    return _finish(rng, scene, name, "curved")


def _damaged(rng: np.random.Generator, name: str) -> CorpusSample:
    """Torn, stained, creased, covered, scribbled on or badly printed."""
    scene = _photo_page(rng, _specs(rng, 1))
    strength = _strength(rng)
    quad = scene.quads[0]
    module = float(scene.module_px()[0])
    kinds = [str(rng.choice(list(DAMAGES)))]
    if rng.random() < 0.35:
        kinds.append(str(rng.choice([k for k in DAMAGES if k != kinds[0]])))
    notes = []
    for i, kind in enumerate(kinds):
        # A second, milder damage: real paper rarely suffers just one thing.
        severity = strength if i == 0 else strength * 0.5
        notes.append(DAMAGES[kind](scene.image, quad, module, rng, severity))
    _snap(rng, scene, _mild_pose(rng))
    _room_light(rng, scene)
    scene.note(strength=strength, damage="; ".join(notes))
    return _finish(rng, scene, name, "damaged")


def _dense(rng: np.random.Generator, name: str) -> CorpusSample:
    """Long tax records in version 15-25 symbols, photographed with the whole page in view.

    Issuers print such symbols at 0.3-0.45 mm per module to keep them small,
    which a full-page phone photo resolves at only 1.5 to 2.3 pixels.
    """
    scene = _photo_page(rng, [_dense_spec(rng)])
    strength = _strength(rng)
    target = _lerp(2.3, 1.5, strength)
    pose = _mild_pose(rng, fill=float(rng.uniform(0.8, 0.95)))
    _snap(rng, scene, pose, scale=_scale_for(scene, pose, target))
    _room_light(rng, scene)
    scene.note(strength=strength, module_target_px=target)
    return _finish(rng, scene, name, "dense")


def _dense_spec(rng: np.random.Generator) -> CodeSpec:
    """A long tax record whose own length puts it in versions 15-25.

    No version is forced: padding a short payload into a big symbol would let
    the encoder raise the error correction to H and make the symbol far more
    forgiving than a real full one.
    """
    while True:
        payload = make_payload(rng, "pipe_record")
        error = str(rng.choice(("l", "m", "q"), p=(0.4, 0.45, 0.15)))
        symbol = make_symbol(payload.data, payload.is_text, error=error, mask=0)
        if 15 <= symbol.version <= 25:
            return CodeSpec(payload, error=error)


def _multi(rng: np.random.Generator, name: str) -> CorpusSample:
    """Two to four codes on a page (payment, tax authority, tracking...), in an everyday photo.

    One common nuisance, drawn at random, makes some codes harder than
    others: a slightly missed focus, a shaky hand or a shot from farther away.
    """
    count = int(rng.integers(2, 5))
    scene = _photo_page(rng, _specs(rng, count, micro_share=0.05))
    strength = _strength(rng)
    nuisance = str(rng.choice(("defocus", "shake", "distance")))
    if nuisance == "distance":
        target = _lerp(2.6, 1.5, strength)
        pose = _mild_pose(rng, fill=float(rng.uniform(0.6, 0.95)))
        _snap(rng, scene, pose, scale=_scale_for(scene, pose, target))
    else:
        _snap(rng, scene, _mild_pose(rng))
    _room_light(rng, scene)
    if nuisance == "defocus":
        sigma = _lerp(0.15, 0.7, strength) * scene.smallest_module()
        scene.image = effects.defocus(scene.image, sigma)
    elif nuisance == "shake":
        length = _lerp(0.7, 3.0, strength) * scene.smallest_module()
        scene.image = effects.motion(scene.image, length, float(rng.uniform(0, np.pi)))
    scene.note(codes=count, nuisance=nuisance, strength=strength)
    return _finish(rng, scene, name, "multi")


def _none(rng: np.random.Generator, name: str) -> CorpusSample:
    """No QR code anywhere, but barcodes, 2-D symbols, logos, tables and stamps instead."""
    digital = bool(rng.random() < 0.5)
    count = int(rng.integers(1, 4))
    specs = _specs(rng, count)
    if digital:
        scene = _page(rng, specs, dpi=float(rng.choice((150, 200, 300))))
    else:
        scene = _photo_page(rng, specs)
    decoys = []
    for code, quad in zip(scene.placed, scene.quads, strict=True):
        # The code's tile, quiet zone included, is where the decoy goes.
        pad = 4 * code.module_px
        x0, y0 = np.floor(quad.min(axis=0) - pad).astype(int)
        x1, y1 = np.ceil(quad.max(axis=0) + pad).astype(int)
        decoys.append(draw_decoy(scene.image, (int(x0), int(y0), int(x1), int(y1)), rng))
    # The decoys replaced the codes: keep the page's scale, drop the truth.
    scene.placed, scene.quads = (), as_quads([])
    scene.note(decoys=", ".join(decoys))
    if digital:
        fmt = str(rng.choice(("png", "jpeg", "pdf")))
        return _assemble(scene, name, "none", fmt, int(rng.integers(80, 96)))
    _snap(rng, scene, _mild_pose(rng, roll=float(rng.uniform(-30, 30))))
    _room_light(rng, scene)
    return _finish(rng, scene, name, "none")


def _lowres(rng: np.random.Generator, name: str) -> CorpusSample:
    """A phone photo of an invoice as an upload pipeline delivers it: shot at a few times
    the final size, then area-shrunk so that every code spans 2 to 4 pixels per module,
    and saved again as a JPEG of quality 60 to 85. Two to four codes a page, some pages
    turned at any angle or by quarter turns in the frame.

    The codes of one page share a printed module size (within 10%), so "2 to 4 pixels"
    holds for each of them, not just for the largest.
    """
    count = int(rng.integers(2, 5))
    module_mm = float(rng.uniform(0.5, 0.8))
    specs = [
        dataclasses.replace(spec, module_mm=module_mm * float(rng.uniform(0.9, 1.1)))
        for spec in _specs(rng, count, micro_share=0.05)
    ]
    scene = _page(rng, specs, megapixels=float(rng.uniform(3.0, 5.0)))
    turned = rng.random()
    if turned < 0.15:
        roll = float(90 * rng.integers(1, 4) + rng.uniform(-3, 3))
    elif turned < 0.35:
        roll = float(rng.uniform(0, 360))
    else:
        roll = float(rng.uniform(-4.0, 4.0))
    pose = _mild_pose(rng, roll=roll, fill=float(rng.uniform(0.7, 0.95)))
    # The largest code lands at `target`; the others, up to a fifth smaller, stay above 2.
    target = float(rng.uniform(2.6, 4.0))
    shrink = float(rng.uniform(2.0, 3.0))  # how much larger the phone's own photo was
    _snap(rng, scene, pose, scale=_scale_for(scene, pose, target * shrink))
    _room_light(rng, scene)
    # The phone's focus, sensor and JPEG at its own resolution, before the pipeline shrinks
    # it: a hand-held shot of a whole page is soft by a third to 0.6 of a module, which the
    # shrink then folds into 2-4 pixels.
    softness = float(rng.uniform(0.3, 0.6)) * target * shrink
    noise = float(rng.uniform(3.0, 8.0))
    phone_quality = int(rng.integers(80, 96))
    scene.image = effects.grain(effects.defocus(scene.image, softness), noise, rng)
    scene.image = effects.jpeg_pass(scene.image, phone_quality)
    scene.image, points = effects.resize(scene.image, scene.quads.reshape(-1, 2), 1.0 / shrink)
    scene.quads = points.reshape(scene.quads.shape)
    quality = int(rng.integers(60, 86))
    sizes = scene.module_px()
    scene.note(
        codes=count,
        roll=roll,
        shrink=shrink,
        module_px_min=float(sizes.min()),
        module_px_max=float(sizes.max()),
        lens_sigma_px=softness,
        noise_sigma=noise,
        phone_jpeg_quality=phone_quality,
        jpeg_quality=quality,
    )
    return _assemble(scene, name, "lowres", "jpeg", quality)


def _multi_digital(rng: np.random.Generator, name: str) -> CorpusSample:
    """A clean digital page with two or three codes of mixed size and density: a dense
    payment or tax record (an EPC or QR-bill payment code, a long pipe record) printed at
    0.3-0.45 mm per module beside one or two ordinary codes.

    The page reduced for a fast look shrinks the dense code to a module or two per pixel
    while the ordinary ones stay readable: the case of a page called complete with one of
    its codes unread.
    """
    fmt = str(rng.choice(("png", "jpeg", "pdf")))
    dpi = float(rng.choice((150, 200, 240, 300)))
    paper = "letter" if rng.random() < 0.25 else "a4"
    count = int(rng.integers(2, 4))
    dense = _dense_payment_spec(rng)
    others = _specs(rng, count - 1, micro_share=0.1)
    scene = _page(rng, [dense, *others], dpi=dpi, paper=paper)
    scene.note(dpi=dpi, paper=paper, codes=count, dense_version=scene.placed[0].version)
    return _assemble(scene, name, "multi_digital", fmt, int(rng.integers(80, 96)))


def _dense_payment_spec(rng: np.random.Generator) -> CodeSpec:
    """A payment (EPC, QR-bill) or tax record long enough for version 9 or more on its own
    (never padded up: see _dense_spec), at the small module size dense codes are printed."""
    while True:
        kind = "newline_record" if rng.random() < 0.6 else "pipe_record"
        payload = make_payload(rng, kind)
        error = str(rng.choice(("l", "m", "q"), p=(0.25, 0.6, 0.15)))
        symbol = make_symbol(payload.data, payload.is_text, error=error, mask=0)
        if 9 <= symbol.version <= 25:
            return CodeSpec(payload, error=error, module_mm=float(rng.uniform(0.3, 0.45)))


_BUILDERS: dict[str, Builder] = {
    "digital": _digital,
    "blurred": _blurred,
    "motion": _motion,
    "perspective": _perspective,
    "rotated": _rotated,
    "small": _small,
    "low_contrast": _low_contrast,
    "glare": _glare,
    "shadow": _shadow,
    "noisy_jpeg": _noisy_jpeg,
    "curved": _curved,
    "damaged": _damaged,
    "dense": _dense,
    "multi": _multi,
    "none": _none,
    "lowres": _lowres,
    "multi_digital": _multi_digital,
}


# --- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.synth.corpus", description=__doc__.splitlines()[0]
    )
    parser.add_argument("outdir", type=Path, help="folder to write into (created if missing)")
    parser.add_argument(
        "--per-category", type=int, default=100, help="samples per category (default 100)"
    )
    parser.add_argument(
        "--categories",
        default=",".join(CATEGORIES),
        help="comma-separated categories (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    args = parser.parse_args(argv)
    if args.seed < 0 or args.per_category < 0:
        parser.error("--seed and --per-category must not be negative")
    names = [name.strip() for name in args.categories.split(",") if name.strip()]
    try:
        _check_categories(names)
    except ValueError as error:
        parser.error(str(error))
    start = time.perf_counter()
    files = write_corpus(args.outdir, names, args.per_category, args.seed)
    samples = len(names) * args.per_category
    elapsed = time.perf_counter() - start
    print(f"wrote {samples} samples ({len(files)} files) to {args.outdir} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
