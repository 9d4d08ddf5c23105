"""The Wiener deconvolution (worker.engine.enhance.wiener): what it restores, and that its
cost does not depend on whether the crop's padded side factors into small primes.

The detector stages deconvolve every unread detection's crop (defocus, twice, and shake),
and a crop's side is whatever the detector's box makes it (320 to 640 pixels once reduced):
FFTs over a side of a large prime factor cost up to ten times those over one of small
factors, and they were an eighth of the CPU the corpus's slowest images took (issue 19).
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import segno

from worker.engine import enhance


def _reference(gray: np.ndarray, kernel: np.ndarray, nsr: float) -> np.ndarray:
    """The same filter in float64 over the crop reflected by twice the kernel's side, as
    the deconvolution was first written: what the engine's must agree with."""
    pad = kernel.shape[0] * 2
    image = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REFLECT).astype(np.float64)
    height, width = image.shape
    placed = np.zeros((height, width), np.float64)
    kh, kw = kernel.shape
    placed[:kh, :kw] = kernel
    placed = np.roll(placed, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    transfer = np.fft.rfft2(placed)
    restored = np.fft.irfft2(
        np.fft.rfft2(image) * np.conj(transfer) / (np.abs(transfer) ** 2 + nsr), s=(height, width)
    )
    restored = restored[pad : pad + gray.shape[0], pad : pad + gray.shape[1]]
    return np.clip(restored, 0, 255).astype(np.uint8)


def _blurred_symbol(side: int) -> np.ndarray:
    """A QR symbol filling a `side` x `side` crop, defocused (Gaussian, sigma 2.5 px)."""
    modules = np.array(segno.make_qr("WIENER-" * 6, error="m").matrix, dtype=bool)
    image = np.where(np.pad(modules, 4), 20, 235).astype(np.uint8)
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(image, (0, 0), 2.5)


def _defocus_kernel(sigma: float) -> np.ndarray:
    taps = cv2.getGaussianKernel(int(sigma * 6) | 1, sigma)
    return (taps @ taps.T).astype(np.float32)


def test_the_deconvolution_agrees_with_the_float64_filter() -> None:
    # Sides whose padded FFT size is prime or of large factors, and round ones.
    for side in (331, 413, 587, 580, 640):
        gray = _blurred_symbol(side)
        for sigma, nsr in ((2.5, 0.005), (1.5, 0.005), (2.5, 0.01)):
            kernel = _defocus_kernel(sigma)
            restored = enhance.wiener(gray, kernel, nsr=nsr)
            reference = _reference(gray, kernel, nsr)
            assert restored.shape == gray.shape and restored.dtype == np.uint8
            difference = np.abs(restored.astype(np.int16) - reference)
            # A grey level either way where the filtered value sits at an integer's edge.
            assert difference.max() <= 1, side
            assert (difference > 0).mean() < 0.002, side


def _cpu_ms(gray: np.ndarray, kernel: np.ndarray) -> float:
    best = float("inf")
    for _ in range(7):
        started = time.thread_time()
        enhance.wiener(gray, kernel, nsr=0.005)
        best = min(best, time.thread_time() - started)
    return best * 1000.0


def test_a_crop_of_awkward_side_costs_no_more_than_a_round_one() -> None:
    kernel = _defocus_kernel(2.5)
    # Padded by twice the kernel's side (15): 587 -> 647, a prime; 580 -> 640 = 2^7 x 5.
    awkward = _cpu_ms(_blurred_symbol(587), kernel)
    round_ = _cpu_ms(_blurred_symbol(580), kernel)
    assert awkward < 1.5 * round_, (awkward, round_)


def test_a_kept_filter_restores_as_one_made_afresh() -> None:
    # A scan deconvolves crop after crop by the same kernel at the same transform size (the
    # late variants' defocus at one sigma): the filter is made once and kept
    # (enhance._wiener_filter), and what it restores is what a filter made for the crop does.
    kernel = _defocus_kernel(2.5)
    first, second = _blurred_symbol(400), 255 - _blurred_symbol(400)
    enhance._wiener_filter.cache_clear()
    enhance.wiener(first, kernel, nsr=0.005)
    kept = enhance.wiener(second, kernel, nsr=0.005)
    assert enhance._wiener_filter.cache_info().hits == 1
    enhance._wiener_filter.cache_clear()
    fresh = enhance.wiener(second, kernel, nsr=0.005)
    assert np.array_equal(kept, fresh)
    # Kept read-only: a restoration multiplies the crop's spectrum by it, never it.
    taps = kernel.astype(np.float32)
    made = enhance._wiener_filter(taps.tobytes(), taps.shape, 432, 432, 0.005)
    assert not made.flags.writeable
    # Taps of another type are the filter of their float32 values, as they were before.
    assert np.array_equal(enhance.wiener(second, kernel.astype(np.float64), nsr=0.005), fresh)
