"""A symbol blurred so far that the equaliser leaves too many data modules wrong, read from
the module values of its deconvolved image (decoder._readings).

A Gaussian blur of 0.65-0.75 of a module (a version 2-L at 3-4 px a module) keeps the grid:
the finders trace and the timing and alignment modules fit. But a lone module then keeps a
quarter of its contrast and its neighbours' spill reaches two modules out: the plain values
get about 60 data modules wrong, the equaliser (a linear model of the spill from the nearest
twelve, with decision feedback) still 40-60, far past what a 2-L block corrects.

A lens out of focus spreads a point over a disc, not a Gaussian. Over a disc of 1.05-1.15
modules' radius (its spectrum's first zero, 0.61 / radius cycles a module, near the module
grid's 0.5: a lone module's contrast all but gone, its finest detail inverted) the grid
still fits, and a Gaussian deconvolution leaves too many modules wrong; the values
deconvolved by the disc itself, at the radius the known modules say, read.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segno

from worker.engine.qr import decode

TEXT = "http://www.icespace.com/"


def blurred(
    px: float, sigma_modules: float, seed: int, disc_modules: float = 0.0
) -> tuple[np.ndarray, tuple]:
    """A version 2-L symbol at `px` pixels a module, a 4-module quiet zone, blurred by a
    Gaussian of `sigma_modules` modules or, given `disc_modules`, by a disc of that radius
    (at 8 samples a module, before it is reduced), with grey-level noise; and its outline."""
    symbol = segno.make(TEXT, version=2, error="L", mask=6, mode="byte", boost_error=False)
    modules = np.array(symbol.matrix, dtype=bool)
    size = modules.shape[0]
    fine = 8
    big = np.kron(np.where(modules, 40, 215).astype(np.float32), np.ones((fine, fine), np.float32))
    big = np.pad(big, 4 * fine, constant_values=215)
    if disc_modules:
        # Drawn at 16 times the resolution and reduced: a disc with its rim's coverage.
        radius = disc_modules * fine
        side = 2 * int(radius + 2) + 1
        sharp = np.zeros((16 * side, 16 * side), np.float32)
        cv2.circle(sharp, (8 * side, 8 * side), round(16 * radius), 1.0, -1, cv2.LINE_AA)
        disc = cv2.resize(sharp, (side, side), interpolation=cv2.INTER_AREA)
        big = cv2.filter2D(big, -1, disc / disc.sum(), borderType=cv2.BORDER_REPLICATE)
    side = round((size + 8) * px)
    image = cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA)
    if sigma_modules:
        image = cv2.GaussianBlur(image, (0, 0), sigma_modules * px)
    image += np.random.default_rng(seed).normal(0, 3, image.shape).astype(np.float32)
    canvas = np.full((side + 60, side + 60), 215.0, np.float32)
    canvas[30 : 30 + side, 30 : 30 + side] = image
    start = 30 + 4 * px
    end = start + size * px
    outline = ((start, start), (end, start), (end, end), (start, end))
    return np.clip(canvas, 0, 255).astype(np.uint8), outline


@pytest.mark.parametrize(
    ("px", "sigma_modules", "seed"), [(3.0, 0.7, 1), (3.5, 0.65, 2), (3.5, 0.75, 3), (4.0, 0.7, 4)]
)
def test_a_heavily_blurred_symbol_reads_from_its_deconvolved_modules(
    px: float, sigma_modules: float, seed: int
) -> None:
    image, outline = blurred(px, sigma_modules, seed)
    read = decode(image, outline)
    assert read is not None
    assert read.text == TEXT


def test_blur_past_the_grid_still_refuses() -> None:
    # At 0.8 of a module the finders no longer trace: nothing is sampled, nothing misread.
    image, outline = blurred(3.5, 0.8, 5)
    assert decode(image, outline) is None


@pytest.mark.parametrize(
    ("px", "disc_modules", "seed"), [(3.0, 1.1, 1), (3.5, 1.05, 2), (4.0, 1.15, 3), (5.0, 1.1, 4)]
)
def test_a_defocused_symbol_reads_from_its_values_deconvolved_by_the_lens_disc(
    px: float, disc_modules: float, seed: int
) -> None:
    image, outline = blurred(px, 0.0, seed, disc_modules=disc_modules)
    read = decode(image, outline)
    assert read is not None
    assert read.text == TEXT


def test_defocus_past_the_grid_still_refuses() -> None:
    # Over a disc of 1.25 modules the finders no longer trace: nothing is sampled.
    image, outline = blurred(3.5, 0.0, 5, disc_modules=1.25)
    assert decode(image, outline) is None
