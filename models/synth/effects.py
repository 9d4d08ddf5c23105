"""Photo effects with explicit physical parameters, aimed at a code where it matters.

degrade.py draws its parameters from one ``strength`` and places glare and
shadows anywhere in the frame, which suits training mixes.  A benchmark
category needs the opposite: the effect it is named after must actually hit
the code, and its size is set in the code's own units (pixels per module), so
that the same setting is about equally hard on every sample.  Local effects
work on a window around their footprint to stay fast on large photos.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float64]

_SHADOW_FIELD = 4  # shadow masks are computed at 1/4 resolution: penumbrae are soft anyway


def defocus(image: Image, sigma: float) -> Image:
    """Out-of-focus blur; ``sigma`` in pixels."""
    if sigma <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigma)


def motion(image: Image, length: float, angle: float) -> Image:
    """Camera shake along ``angle`` (radians) over ``length`` pixels, anti-aliased."""
    if length <= 1:
        return image
    size = int(np.ceil(length)) | 1
    kernel = np.zeros((size * 4, size * 4), np.float32)
    c = (size * 4 - 1) / 2
    dx, dy = np.cos(angle) * length * 2, np.sin(angle) * length * 2
    # Drawn at 4x and area-reduced, so fractional lengths stay fractional.
    cv2.line(
        kernel,
        (round(c - dx), round(c - dy)),
        (round(c + dx), round(c + dy)),
        1.0,
        4,
        cv2.LINE_AA,
    )
    kernel = cv2.resize(kernel, (size, size), interpolation=cv2.INTER_AREA)
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel)


def specular(
    image: Image,
    centre: npt.ArrayLike,
    radii: tuple[float, float],
    angle: float,
    peak: float,
) -> Image:
    """A highlight from a lamp or window: an ellipse washed out toward white.

    Above ``peak`` of about 0.8 the core clips to white and the print under it
    is gone, as on glossy thermal paper.  Screen blend, so paper stays white
    while ink lifts.
    """
    h, w = image.shape[:2]
    reach = 2.5 * max(radii)
    cx, cy = (float(v) for v in np.asarray(centre, np.float64))
    x0, x1 = max(0, int(cx - reach)), min(w, int(np.ceil(cx + reach)))
    y0, y1 = max(0, int(cy - reach)), min(h, int(np.ceil(cy + reach)))
    if x1 <= x0 or y1 <= y0:
        return image
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / radii[0]
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / radii[1]
    # A flat-topped falloff: saturated core, soft rim.
    light = np.clip(1.6 * np.exp(-(u * u + v * v)) * peak, 0.0, 1.0).astype(np.float32)
    out = image.copy()
    roi = out[y0:y1, x0:x1].astype(np.float32)
    if roi.ndim == 3:
        light = light[..., None]
    out[y0:y1, x0:x1] = np.clip(255 - (255 - roi) * (1 - light), 0, 255).astype(np.uint8)
    return out


def cast_shadow(
    image: Image,
    through: npt.ArrayLike,
    angle: float,
    darkness: float,
    softness: float,
    bend: float = 0.0,
) -> Image:
    """A shadow (phone, hand) whose edge passes through ``through`` at ``angle`` (radians).

    Everything on the shadow side loses ``darkness`` of its light; the edge is
    ``softness`` pixels wide and may curve (``bend`` is the sag, in pixels, of
    the edge over the frame's width) like the outline of a hand.
    """
    h, w = image.shape[:2]
    fh, fw = max(2, -(-h // _SHADOW_FIELD)), max(2, -(-w // _SHADOW_FIELD))
    ys, xs = np.mgrid[0:fh, 0:fw].astype(np.float32)
    xs = (xs + 0.5) * _SHADOW_FIELD
    ys = (ys + 0.5) * _SHADOW_FIELD
    px, py = (float(v) for v in np.asarray(through, np.float64))
    along = np.cos(angle) * (xs - px) + np.sin(angle) * (ys - py)
    across = -np.sin(angle) * (xs - px) + np.cos(angle) * (ys - py)
    across -= bend * (along / max(w, h)) ** 2
    shade = 1.0 / (1.0 + np.exp(np.clip(-across / max(0.5, softness / 4), -60.0, 60.0)))
    gain = (1.0 - darkness * shade).astype(np.float32)
    gain = cv2.resize(gain, (fw * _SHADOW_FIELD, fh * _SHADOW_FIELD))[:h, :w]
    if image.ndim == 3:
        # Shadows under daylight turn slightly blue: the fill light is the sky.
        gain = cv2.merge([gain * np.float32(1.06), gain, gain * np.float32(0.96)])
    return cv2.multiply(image, gain, dtype=cv2.CV_8U)


def contrast(image: Image, keep: float, centre: float) -> Image:
    """Scale contrast to ``keep`` of the original around grey level ``centre`` (haze, exposure)."""
    return cv2.addWeighted(image, keep, image, 0.0, centre * (1 - keep))


def fade(image: Image, keep: float) -> Image:
    """Faded or low-toner print: dark ink keeps ``keep`` of its darkness, paper stays as is."""
    return cv2.addWeighted(image, keep, image, 0.0, 255 * (1 - keep))


def grain(image: Image, sigma: float, rng: np.random.Generator, size: float = 0.0) -> Image:
    """Sensor noise with standard deviation ``sigma`` grey levels.

    Same trick as degrade.noise: the sum of two uniform byte planes is
    triangular, looks Gaussian on a photo and is much faster to draw.  A
    ``size`` above zero (pixels) correlates the noise the way demosaicing and
    in-camera denoising do in dim light: blotches instead of single pixels,
    which a reader cannot average away within a module.
    """
    if sigma <= 0:
        return image
    h, w = image.shape[:2]
    planes = np.frombuffer(rng.bytes(2 * h * w), np.uint8).reshape(2, h, w)
    if size > 0:
        white = cv2.add(planes[0], planes[1], dtype=cv2.CV_32F) - np.float32(255.0)
        # Blurring white noise with a Gaussian of sigma s divides its standard
        # deviation by 2 * sqrt(pi) * s; scale it back up to ``sigma``.
        gain = sigma / (255.0 / np.sqrt(6.0)) * 2 * np.sqrt(np.pi) * size
        noise = cv2.GaussianBlur(white, (0, 0), size) * np.float32(gain)
        noise = noise.astype(np.int16)
    else:
        k = sigma / (255.0 / np.sqrt(6.0))
        noise = cv2.addWeighted(planes[0], k, planes[1], k, -255.0 * k, dtype=cv2.CV_16S)
    if image.ndim == 3:
        noise = cv2.merge([noise] * image.shape[2])
    return cv2.add(image, noise, dtype=cv2.CV_8U)


def jpeg_pass(image: Image, quality: int) -> Image:
    """One lossy save and reload, as when a photo was forwarded through a messenger."""
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    flag = cv2.IMREAD_GRAYSCALE if image.ndim == 2 else cv2.IMREAD_COLOR
    return cv2.imdecode(buffer, flag)


def resize(image: Image, points: Points, factor: float) -> tuple[Image, Points]:
    """Area-average shrink (or linear enlarge) by ``factor``; pixel-edge points follow exactly."""
    h, w = image.shape[:2]
    new_w, new_h = max(8, round(w * factor)), max(8, round(h * factor))
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, (new_w, new_h), interpolation=method)
    return out, points * np.array([new_w / w, new_h / h])
