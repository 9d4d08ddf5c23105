"""Image variants that turn a hard photo into one zxing can read.

Each is cheap on its own; the thorough stage tries them in order of how often they
help, so the common failure modes (soft focus, flat contrast, uneven light, sensor
noise) are covered before the rare ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from worker.engine.deadline import spend


def unsharp(gray: np.ndarray) -> np.ndarray:
    blurred = cv2.GaussianBlur(gray, (0, 0), sigmaX=2.0)
    out = cv2.addWeighted(gray, 1.8, blurred, -0.8, 0)
    spend("unsharp", gray.size)
    return out


def clahe(gray: np.ndarray, windows_of: tuple[int, ...] | None = None) -> np.ndarray:
    """CLAHE over 8 x 8 tiles of the image, or, with `windows_of` (the shape of the page
    `gray` was cut from), over tiles the size the page's would be."""
    grid = (8, 8)
    if windows_of is not None:
        tile_h, tile_w = windows_of[0] / 8.0, windows_of[1] / 8.0
        grid = (max(1, round(gray.shape[1] / tile_w)), max(1, round(gray.shape[0] / tile_h)))
    out = cv2.createCLAHE(clipLimit=3.0, tileGridSize=grid).apply(gray)
    spend("clahe", gray.size)
    return out


def local_threshold(gray: np.ndarray, windows_of: tuple[int, ...] | None = None) -> np.ndarray:
    """An adaptive threshold whose window is sized from the image, or from `windows_of`
    (the shape of the page `gray` was cut from)."""
    # The window must span several modules yet stay local enough to follow a shadow edge.
    shape = gray.shape if windows_of is None else windows_of
    block = max(15, (min(shape[:2]) // 40) | 1)
    out = cv2.adaptiveThreshold(
        gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, 7
    )
    spend("threshold", gray.size)
    return out


def denoise(gray: np.ndarray) -> np.ndarray:
    out = cv2.medianBlur(gray, 3)
    spend("median", gray.size)
    return out


def upscale(gray: np.ndarray, factor: float = 2.0) -> np.ndarray:
    return cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)


def tiles(shape: tuple[int, ...], size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping (x, y, w, h) windows covering an image; overlap exceeds any code we
    expect to be small enough to need tiling, so no code is cut by every window."""
    height, width = shape[:2]
    step = max(1, size - overlap)

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        points = list(range(0, length - size, step))
        points.append(length - size)
        return points

    return [
        (x, y, min(size, width - x), min(size, height - y))
        for y in starts(height)
        for x in starts(width)
    ]


# Camera shake smears every edge along one direction: image gradients across the smear
# survive, gradients along it vanish. A page whose gradient energy differs this much
# between its strongest and weakest direction is smeared; defocus, glare, noise and
# print damage stay near 1 (measured on the benchmark: shake 2.3 to 5.2, others <= 1.2).
_SHAKE_ANISOTROPY = 1.8
# Deconvolution works on at most this many pixels a side: enough for a version-25 code
# at 4 pixels per module, and it keeps the FFTs to a few milliseconds.
_DEBLUR_SIDE = 640
# The cepstrum's dip sits a little beyond the smear's true length (by about a tenth on
# the benchmark); a kernel that is slightly too short rings less than one too long.
_LENGTH_FACTOR = 0.9
# Noise-to-signal ratio of the Wiener filter: the lowest that did not amplify JPEG noise
# into false modules on the benchmark's shaken photos.
_WIENER_NSR = 0.01


@dataclass(frozen=True, slots=True)
class Shake:
    """A straight camera-shake smear: its direction (degrees, 0..180, image axes with y
    down) and its length in pixels."""

    angle: float
    length: float


def estimate_shake(gray: np.ndarray) -> Shake | None:
    """The smear of a shaken photo, or None when the image is not smeared.

    The direction is the structure tensor's weakest axis; the length is where the
    cepstrum along that axis dips (a box smear of length L puts zeros in the spectrum
    every 1/L, so the log spectrum's own spectrum has a trough at L).
    """
    g = gray.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    tensor = np.array(
        [[(gx * gx).mean(), (gx * gy).mean()], [(gx * gy).mean(), (gy * gy).mean()]], np.float64
    )
    values, vectors = np.linalg.eigh(tensor)
    spend("shake", gray.size)
    if values[0] <= 0 or values[1] / values[0] < _SHAKE_ANISOTROPY:
        return None
    dx, dy = vectors[:, 0]
    angle = float(np.degrees(np.arctan2(dy, dx)) % 180.0)
    window = np.outer(np.hanning(g.shape[0]), np.hanning(g.shape[1])).astype(np.float32)
    spectrum = np.abs(np.fft.fft2((g - g.mean()) * window))
    cepstrum = np.fft.ifft2(np.log(spectrum + 1e-3)).real
    spend("cepstrum", gray.size)
    height, width = cepstrum.shape
    radii = np.arange(2.0, min(40.0, min(height, width) / 4.0), 0.5)
    if len(radii) == 0:
        return None
    xs = np.rint(np.cos(np.radians(angle)) * radii).astype(int) % width
    ys = np.rint(np.sin(np.radians(angle)) * radii).astype(int) % height
    length = float(radii[int(np.argmin(cepstrum[ys, xs]))])
    return Shake(angle, length)


def shake_kernel(shake: Shake) -> np.ndarray:
    """The point spread of `shake`: an anti-aliased line, drawn at 4x and area-reduced
    so that fractional lengths stay fractional."""
    size = (int(np.ceil(shake.length)) | 1) + 2
    kernel = np.zeros((size * 4, size * 4), np.float32)
    centre = (size * 4 - 1) / 2.0
    dx = np.cos(np.radians(shake.angle)) * shake.length * 2.0
    dy = np.sin(np.radians(shake.angle)) * shake.length * 2.0
    start = (round(centre - dx), round(centre - dy))
    end = (round(centre + dx), round(centre + dy))
    cv2.line(kernel, start, end, 1.0, 4, cv2.LINE_AA)
    kernel = cv2.resize(kernel, (size, size), interpolation=cv2.INTER_AREA)
    return kernel / kernel.sum()


def wiener(gray: np.ndarray, kernel: np.ndarray, nsr: float = _WIENER_NSR) -> np.ndarray:
    """Deconvolve `gray` by `kernel` (a Wiener filter), reflecting the borders so the
    crop's edges do not ring into the code."""
    pad = kernel.shape[0] * 2
    rows, cols = gray.shape
    # The transforms run at the next size of small prime factors (cv2.getOptimalDFTSize),
    # the extra rows and columns reflected too: a crop's side is whatever its box makes it,
    # and over a prime side (587 + 2 x 30 = 647) the FFTs cost several times those over
    # 648. The restored crop differs from one over the bare padding by a grey level on
    # about one pixel in a thousand (tests/test_enhance_wiener.py).
    height = cv2.getOptimalDFTSize(rows + 2 * pad)
    width = cv2.getOptimalDFTSize(cols + 2 * pad)
    image = cv2.copyMakeBorder(
        gray, pad, height - rows - pad, pad, width - cols - pad, cv2.BORDER_REFLECT
    ).astype(np.float32)
    # OpenCV's DFT: numpy's float32 FFTs took 3-8 times as long at the same sizes.
    spectrum = cv2.dft(image, flags=cv2.DFT_COMPLEX_OUTPUT).view(np.complex64)[..., 0]
    taps = np.ascontiguousarray(kernel, dtype=np.float32)
    spectrum *= _wiener_filter(taps.tobytes(), taps.shape, height, width, nsr)
    restored = cv2.idft(
        spectrum.view(np.float32).reshape(height, width, 2),
        flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE,
    )
    restored = restored[pad : pad + rows, pad : pad + cols]
    # Charged as the filter over the bare padding was (its price per pixel was calibrated
    # on it), so the late variants' budgets hold the same work as before.
    spend("wiener", (rows + 2 * pad) * (cols + 2 * pad))
    return np.clip(restored, 0, 255).astype(np.uint8)


# Filters kept (_wiener_filter): a scan deconvolves many crops by the same kernel at the same
# transform size (the late variants' defocus at one sigma, crops of similar boxes: of 772
# deconvolutions on the corpus's 93 slowest images, 540 found their filter among the last 8,
# 155 distinct in all). A filter is 8 bytes a pixel of the transform: 1.2 MB at the usual
# 384 x 384, 10 MB at the largest (a version 40 deconvolved at 6 pixels a module).
_WIENER_FILTERS = 8


@lru_cache(maxsize=_WIENER_FILTERS)
def _wiener_filter(
    taps: bytes, shape: tuple[int, ...], height: int, width: int, nsr: float
) -> np.ndarray:
    """The Wiener filter of a kernel (float32 `taps` of `shape`) for a height x width
    transform, its centre at the origin: what wiener() multiplies the image's spectrum by,
    the same values whether made now or kept (read-only)."""
    kh, kw = shape
    placed = np.zeros((height, width), np.float32)
    placed[:kh, :kw] = np.frombuffer(taps, np.float32).reshape(kh, kw)
    placed = np.roll(placed, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    transfer = cv2.dft(placed, flags=cv2.DFT_COMPLEX_OUTPUT).view(np.complex64)[..., 0]
    # Times a real gain: numpy's complex-by-real division (and broadcasting over the two
    # channels) was slower than the transforms.
    gain = 1.0 / (transfer.real**2 + transfer.imag**2 + np.float32(nsr))
    kept = np.conj(transfer) * gain
    kept.flags.writeable = False
    return kept


def deblur_shake(gray: np.ndarray) -> np.ndarray | None:
    """`gray` with camera shake undone, same size; None when it shows no shake (the
    caller then skips the decode it would have spent on an unchanged image)."""
    height, width = gray.shape[:2]
    factor = min(1.0, _DEBLUR_SIDE / max(height, width))
    small = gray
    if factor < 1.0:
        small = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        spend("resize", gray.size + small.size)
    shake = estimate_shake(small)
    if shake is None:
        return None
    kernel = shake_kernel(Shake(shake.angle, shake.length * _LENGTH_FACTOR))
    restored = wiener(small, kernel)
    if factor < 1.0:
        restored = cv2.resize(restored, (width, height), interpolation=cv2.INTER_CUBIC)
        spend("resize", small.size + restored.size)
    return restored


# Defocus spreads each module into its neighbours as a Gaussian; its width, in pixels of
# a crop reduced to _DEBLUR_SIDE, at which deconvolution read the most of the benchmark's
# soft photos (a kernel narrower than the blur still sharpens; a wider one rings).
_DEFOCUS_SIGMA = 2.5
# Noise-to-signal ratio for defocus: a Gaussian's spectrum has no zeros, so less
# regularisation than for shake keeps more of the restored contrast.
_DEFOCUS_NSR = 0.005


def deblur_defocus(gray: np.ndarray, sigma: float = _DEFOCUS_SIGMA) -> np.ndarray:
    """`gray` deconvolved by a Gaussian of `sigma` pixels (at most _DEBLUR_SIDE a side),
    same size: for lens softness beyond what an unsharp mask recovers."""
    height, width = gray.shape[:2]
    factor = min(1.0, _DEBLUR_SIDE / max(height, width))
    small = gray
    if factor < 1.0:
        small = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        spend("resize", gray.size + small.size)
    restored = deconvolve_defocus(small, sigma)
    if factor < 1.0:
        restored = cv2.resize(restored, (width, height), interpolation=cv2.INTER_CUBIC)
        spend("resize", small.size + restored.size)
    return restored


def deconvolve_defocus(gray: np.ndarray, sigma: float) -> np.ndarray:
    """`gray` deconvolved by a Gaussian of `sigma` pixels (a Wiener filter), same size, at
    its own resolution."""
    taps = cv2.getGaussianKernel(int(sigma * 6) | 1, sigma)
    return wiener(gray, (taps @ taps.T).astype(np.float32), nsr=_DEFOCUS_NSR)


def pillbox(radius: float) -> np.ndarray:
    """A lens's defocus spread: a uniform disc of `radius` pixels, its rim pixels weighted
    by how much of them it covers, summing to 1."""
    side = int(2 * radius + 3) | 1
    y, x = np.mgrid[:side, :side] - side // 2
    disc = np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0).astype(np.float32)
    return disc / disc.sum()


def deconvolve_pillbox(gray: np.ndarray, radius: float) -> np.ndarray:
    """`gray` deconvolved by a disc of `radius` pixels (pillbox; a Wiener filter), same
    size, at its own resolution. Strong defocus spreads a point over a disc, not a
    Gaussian: past the disc's first spectral zero (0.61 / radius cycles a pixel) fine
    detail comes back with its contrast inverted, which only this model turns back."""
    return wiener(gray, pillbox(radius), nsr=_DEFOCUS_NSR)
