"""Phone-photo degradations that keep the ground-truth quads in step.

Every degradation has the signature ``(image, quads, rng, strength) ->
(image, quads)`` with ``strength`` in [0, 1]: at 0.3 a photo is still easy to
read, at 1.0 blur and downscaling make most codes unreadable on purpose, since
those are the cases a learned detector has to find.  Smooth fields
(illumination, shadows, glare, desk texture) are computed at low resolution
and upscaled, which keeps a 2-megapixel photo well under 100 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import numpy.typing as npt

from .geometry import Quads, apply_affine, apply_homography, rot90_quads, rotation_matrix

Image = npt.NDArray[np.uint8]
Degradation = Callable[[Image, Quads, np.random.Generator, float], tuple[Image, Quads]]

_FIELD_SCALE = 16  # low-resolution factor for smooth fields


def _bgr(image: Image) -> Image:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def _smooth_field(
    field: npt.NDArray[np.float32], shape: tuple[int, ...]
) -> npt.NDArray[np.float32]:
    """Upscale a low-resolution field to the image size, one copy per channel."""
    if len(shape) == 3:
        field = cv2.merge([field] * shape[2])
    return cv2.resize(field, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _apply_gain(image: Image, gain: npt.NDArray[np.float32]) -> Image:
    return cv2.multiply(image, _smooth_field(gain, image.shape), dtype=cv2.CV_8U)


def _field_grid(image: Image) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Normalised (x, y) coordinates in [0, 1] on the low-resolution grid."""
    h = max(2, image.shape[0] // _FIELD_SCALE)
    w = max(2, image.shape[1] // _FIELD_SCALE)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs / (w - 1), ys / (h - 1)


# --- scene and geometry -------------------------------------------------------------------


def desk_texture(rng: np.random.Generator, height: int, width: int) -> Image:
    """A table or desk surface: wood grain, speckled laminate or a blotchy pad."""
    h, w = max(4, height // 4), max(4, width // 4)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    style = int(rng.integers(3))
    if style == 0:
        # Wood: fine grain lines that meander, along one axis of the photo.
        base = np.array([45, 90, 150], np.float32) * np.float32(rng.uniform(0.5, 1.3))
        along, across = (xs, ys) if rng.random() < 0.5 else (ys, xs)
        meander = cv2.resize(rng.standard_normal((6, 6)).astype(np.float32), (w, h))
        phase = across * np.float32(rng.uniform(0.8, 2.5)) + meander * np.float32(
            rng.uniform(8, 25)
        )
        streaks = np.sin(along * np.float32(0.02) + phase * np.float32(0.37))
        pattern = 0.8 + 0.08 * np.sin(phase) + 0.06 * streaks
    elif style == 1:
        # Laminate or stone: fine speckle on a flat colour.
        base = rng.uniform(40, 230, size=3).astype(np.float32)
        pattern = 0.92 + 0.06 * rng.standard_normal((h, w)).astype(np.float32)
    else:
        # Desk pad or fabric: large soft blotches.
        base = rng.uniform(20, 200, size=3).astype(np.float32)
        pattern = 0.85 + 0.1 * cv2.resize(rng.standard_normal((8, 8)).astype(np.float32), (w, h))
    small = np.clip(pattern[..., None] * base, 0, 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def perspective(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Photograph the page from a tilted viewpoint onto a desk.

    The frame is a 3:4 portrait photo with the same pixel count as the page.
    The page fills most of it, its corners move by up to 12% of the frame and
    may leave it, but every code stays inside: a photo whose code was cut off
    would carry wrong ground truth.
    """
    h, w = image.shape[:2]
    frame_w = round(np.sqrt(h * w * 0.75))
    frame_h = round(frame_w / 0.75)
    frame = np.array([frame_w, frame_h], np.float64)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    for attempt in range(21):
        if attempt < 20:
            fill = rng.uniform(0.75, 0.95) - 0.1 * strength
            centre = frame / 2 + rng.uniform(-0.04, 0.04, size=2) * frame
            jitter = rng.uniform(-1, 1, size=(4, 2)) * 0.12 * strength * frame
        else:  # give up on jitter: a centred, square-on page always fits
            fill, centre, jitter = 0.8, frame / 2, np.zeros((4, 2))
        scale = min(frame_w / w, frame_h / h) * fill
        dst = unit * np.array([w, h]) * scale / 2 + centre + jitter
        # getPerspectiveTransform works on pixel centres, hence the half-pixel shift.
        matrix = cv2.getPerspectiveTransform(
            (src - 0.5).astype(np.float32), (dst - 0.5).astype(np.float32)
        )
        moved = apply_homography(quads, matrix.astype(np.float64))
        if np.all((moved >= 0.02 * frame) & (moved <= 0.98 * frame)):
            break
    paper = _bgr(image)
    # White balance of paper under room light.
    tint = tuple(float(c) for c in rng.uniform(0.85, 1.0, size=3))
    paper = cv2.multiply(paper, (*tint, 1.0), dtype=cv2.CV_8U)
    canvas = desk_texture(rng, frame_h, frame_w)
    cv2.warpPerspective(
        paper,
        matrix,
        (frame_w, frame_h),
        dst=canvas,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return canvas, moved


def rotation(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Turn the whole photo: sometimes a quarter turn, plus a tilt up to 25 degrees."""
    turns = int(rng.choice(4, p=(0.55, 0.15, 0.15, 0.15)))
    if turns:
        quads = rot90_quads(quads, image.shape[1], image.shape[0], turns)
        image = np.ascontiguousarray(np.rot90(image, turns))
    angle = float(rng.uniform(-25, 25) * strength)
    if abs(angle) < 0.05:
        return image, quads
    h, w = image.shape[:2]
    matrix, new_w, new_h = rotation_matrix(w, h, angle)
    edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).mean(axis=0)
    fill = tuple(float(c) for c in np.atleast_1d(edge))
    out = cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderValue=fill)
    return out, apply_affine(quads, matrix)


def downscale(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Shrink the image so codes end up with few pixels per module."""
    factor = 1.0 / (1.0 + strength * rng.uniform(1.0, 2.0))
    h, w = image.shape[:2]
    new_w, new_h = max(8, round(w * factor)), max(8, round(h * factor))
    out = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # cv2.resize maps pixel edges linearly, so corners scale exactly.
    return out, quads * np.array([new_w / w, new_h / h])


# --- optics and sensor -----------------------------------------------------------------------


def gaussian_blur(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Defocus: sigma from 0.3 to 2.5 pixels."""
    sigma = 0.3 + 2.2 * strength * rng.uniform(0.6, 1.0)
    return cv2.GaussianBlur(image, (0, 0), sigma), quads


def motion_blur(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Camera shake: a line kernel up to 11 pixels long in a random direction."""
    length = max(2, round(1 + 10 * strength * rng.uniform(0.5, 1.0)))
    size = length + (1 - length % 2)
    kernel = np.zeros((size, size), np.float32)
    angle = rng.uniform(0, np.pi)
    c = (size - 1) / 2
    dx, dy = np.cos(angle) * (length - 1) / 2, np.sin(angle) * (length - 1) / 2
    cv2.line(
        kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA
    )
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel), quads


def noise(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Sensor noise: luminance grain with a standard deviation of 2 to 26 grey levels."""
    sigma = 2.0 + 24.0 * strength
    h, w = image.shape[:2]
    # The sum of two uniform byte planes is triangular rather than Gaussian,
    # which looks the same on a photo and is 3x faster than standard_normal.
    planes = np.frombuffer(rng.bytes(2 * h * w), np.uint8).reshape(2, h, w)
    k = sigma / (255.0 / np.sqrt(6.0))
    grain = cv2.addWeighted(planes[0], k, planes[1], k, -255.0 * k, dtype=cv2.CV_16S)
    if image.ndim == 3:
        grain = cv2.merge([grain] * image.shape[2])
    return cv2.add(image, grain, dtype=cv2.CV_8U), quads


def illumination(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Uneven light: a linear gradient in a random direction plus vignetting."""
    xs, ys = _field_grid(image)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) + 0.5
    vignette = (xs - 0.5) ** 2 + (ys - 0.5) ** 2
    gain = 1.0 - strength * (0.55 * np.clip(ramp, 0, 1) + 0.5 * vignette)
    return _apply_gain(image, gain.astype(np.float32)), quads


def shadow(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """A soft shadow (hand or phone) entering from one side of the frame."""
    xs, _ = _field_grid(image)
    h, w = xs.shape
    mask = np.zeros((h, w), np.float32)
    side = int(rng.integers(4))
    reach = rng.uniform(0.25, 0.6)
    far = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    # Build a quadrilateral hugging one edge, with a slanted inner edge.
    if side == 0:
        pts = [far[0], far[1], (w, h * reach * rng.uniform(0.5, 1.5)), (0, h * reach)]
    elif side == 1:
        pts = [(w * (1 - reach), 0), far[1], far[2], (w * (1 - reach * rng.uniform(0.5, 1.5)), h)]
    elif side == 2:
        pts = [(0, h * (1 - reach)), (w, h * (1 - reach * rng.uniform(0.5, 1.5))), far[2], far[3]]
    else:
        pts = [far[0], (w * reach, 0), (w * reach * rng.uniform(0.5, 1.5), h), far[3]]
    cv2.fillPoly(mask, [np.array(pts, np.float64).round().astype(np.int32)], 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.04 * max(h, w)))
    gain = 1.0 - strength * rng.uniform(0.35, 0.6) * mask
    return _apply_gain(image, gain), quads


def glare(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """A specular highlight that washes out an elliptical area."""
    xs, ys = _field_grid(image)
    cx, cy = rng.uniform(0.2, 0.8, size=2)
    rx, ry = rng.uniform(0.05, 0.2, size=2)
    blob = np.exp(-(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)).astype(np.float32)
    # Screen blend, out = 255 - (255 - in) * (1 - light): a gain on the
    # inverted image, so dark ink lifts toward white while paper stays white.
    gain = 1.0 - blob * np.float32(min(1.0, 1.2 * strength))
    return cv2.bitwise_not(_apply_gain(cv2.bitwise_not(image), gain)), quads


def low_contrast(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Faded print or a grey exposure: contrast down to 15%, with a brightness shift."""
    alpha = 1.0 - 0.85 * strength
    centre = rng.uniform(100, 170)
    return cv2.addWeighted(image, alpha, image, 0.0, centre * (1 - alpha)), quads


def jpeg(
    image: Image, quads: Quads, rng: np.random.Generator, strength: float
) -> tuple[Image, Quads]:
    """Blocky compression from a messaging app: quality 90 down to 5."""
    quality = round(90 - 85 * strength * rng.uniform(0.7, 1.0))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    flag = cv2.IMREAD_GRAYSCALE if image.ndim == 2 else cv2.IMREAD_COLOR
    return cv2.imdecode(buf, flag), quads


# Canonical order follows the physical chain: scene, optics, sensor, file.
DEGRADATIONS: dict[str, Degradation] = {
    "perspective": perspective,
    "rotation": rotation,
    "illumination": illumination,
    "shadow": shadow,
    "glare": glare,
    "low_contrast": low_contrast,
    "motion_blur": motion_blur,
    "gaussian_blur": gaussian_blur,
    "downscale": downscale,
    "noise": noise,
    "jpeg": jpeg,
}


def random_mix(rng: np.random.Generator) -> tuple[str, ...]:
    """A plausible phone-photo mix: always a tilted view, plus two to five effects."""
    optional = [name for name in DEGRADATIONS if name != "perspective"]
    count = int(rng.integers(2, 6))
    chosen = {optional[int(i)] for i in rng.choice(len(optional), size=count, replace=False)}
    return ("perspective", *(name for name in optional if name in chosen))


def degrade(
    image: Image,
    quads: Quads,
    rng: np.random.Generator,
    names: Sequence[str],
    strength: float,
) -> tuple[Image, Quads]:
    """Apply the named degradations in canonical order, whatever order they are given in."""
    if unknown := set(names) - set(DEGRADATIONS):
        raise ValueError(f"unknown degradation(s) {sorted(unknown)}; expected {list(DEGRADATIONS)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError("strength must lie in [0, 1]")
    for name, step in DEGRADATIONS.items():
        if name in names:
            image, quads = step(image, quads, rng, strength)
    return image, quads
