"""Redrawing a QR code's lost finder pattern, so that zxing can locate the symbol again.

zxing locates a QR code by its three finder patterns. A torn corner, a stain or a glare
spot over one of them leaves the symbol unlocatable even when error correction could
repair every data module the damage took. In a rectified crop the two surviving finders
say where the third must be (the three sit on the corners of a square, so it is one of
two places) and how large it is; drawing a clean finder at each place in turn gives zxing
back its triplet. A wrong place costs one failed decode: zxing still checks every read
against the code's Reed-Solomon error correction, so a redrawn finder cannot make it
return content that is not in the symbol.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from worker.engine.deadline import spend

# Finders are searched for at most this many pixels a side: a finder of a version-25 code
# in a 1.4x crop is still 12 pixels wide, and contour tracing stays at a millisecond or two.
_SEARCH_SIDE = 480
# A finder is three nested squares with areas 49 : 25 : 9 modules (outer dark, light
# ring, dark centre); after thresholding and blur the ratios drift, so allow a range.
_OUTER_TO_CENTRE = (3.0, 10.0)
_OUTER_TO_RING = (1.3, 3.5)
# The adaptive threshold's offset: dark is this far under the mean of its block.
_OFFSET = 5


@dataclass(frozen=True, slots=True)
class Finder:
    centre: np.ndarray  # (x, y) in the searched image's pixels
    module: float  # module size in pixels


def find_finders(gray: np.ndarray) -> list[Finder]:
    """Nested dark-light-dark squares the size of a finder pattern, deduplicated."""
    side = min(gray.shape[:2])
    block = max(15, (side // 16) | 1)
    # A pixel is dark where it is at least _OFFSET under its block's mean, so none brighter
    # than 255 - _OFFSET is: on a rendered page (white margins, white between the lines) only
    # the box around the darker pixels, grown by half a block so that their means are the
    # whole image's, is thresholded and traced. The finders are the same, in the same order
    # (contours shifted back to the image's pixels). On an invoice page the box is about 60%
    # of it, and the search about a tenth cheaper; on a photo the box is the image.
    height, width = gray.shape[:2]
    rows = np.flatnonzero(gray.min(axis=1) <= 255 - _OFFSET)
    if len(rows) == 0:
        return []
    cols = np.flatnonzero(gray[rows[0] : rows[-1] + 1].min(axis=0) <= 255 - _OFFSET)
    half = block // 2
    x0, y0 = max(0, int(cols[0]) - half), max(0, int(rows[0]) - half)
    x1, y1 = min(width, int(cols[-1]) + 1 + half), min(height, int(rows[-1]) + 1 + half)
    dark = cv2.adaptiveThreshold(
        gray[y0:y1, x0:x1], 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, _OFFSET
    )
    contours, hierarchy = cv2.findContours(
        dark, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
    )
    spend("finder rings", dark.size)
    if hierarchy is None:
        return []
    links = hierarchy[0]
    # Only a contour with a child that has a child of its own can be a finder: picked out at
    # once, since a page of text traces hundreds of contours (a Python loop over them all
    # cost as much as the tracing).
    rings = links[:, 2]
    nested = np.flatnonzero((rings >= 0) & (links[np.maximum(rings, 0), 2] >= 0))
    found: list[Finder] = []
    for index in nested.tolist():
        contour = contours[index]
        ring = int(rings[index])
        centre_index = int(links[ring][2])
        outer = cv2.contourArea(contour)
        inner = cv2.contourArea(contours[ring])
        centre = cv2.contourArea(contours[centre_index])
        if outer < 4 * 49 or centre <= 0 or inner <= 0:
            continue
        if not (_OUTER_TO_CENTRE[0] <= outer / centre <= _OUTER_TO_CENTRE[1]):
            continue
        if not (_OUTER_TO_RING[0] <= outer / inner <= _OUTER_TO_RING[1]):
            continue
        _, (width, height), _ = cv2.minAreaRect(contour)
        if max(width, height) > 1.5 * max(1e-6, min(width, height)):
            continue
        module = float(np.sqrt(outer)) / 7.0
        if module * 7.0 > 0.45 * side:  # a square this large is the symbol, not a finder
            continue
        moments = cv2.moments(contours[centre_index])
        if moments["m00"] <= 0:
            continue
        point = np.array((moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]))
        if any(np.linalg.norm(point - f.centre) < 3.0 * module for f in found):
            continue
        found.append(Finder(point, module))
    return found


def restore_finder(gray: np.ndarray) -> list[np.ndarray]:
    """Copies of a rectified crop with the missing third finder drawn at each place it
    can be; empty unless exactly two finders of one size are visible."""
    height, width = gray.shape[:2]
    factor = min(1.0, _SEARCH_SIDE / max(height, width))
    small = gray
    if factor < 1.0:
        small = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    finders = find_finders(small)
    if len(finders) != 2:
        return []
    first, second = finders
    if max(first.module, second.module) > 1.5 * min(first.module, second.module):
        return []
    module = (first.module + second.module) / 2.0 / factor
    a, b = first.centre / factor, second.centre / factor
    span = float(np.linalg.norm(b - a))
    if span < 10.0 * module:  # finders of one symbol are at least 14 modules apart
        return []
    along = (b - a) / span
    across = np.array((-along[1], along[0]))
    angle = float(np.degrees(np.arctan2(along[1], along[0])) % 90.0)
    if min(angle, 90.0 - angle) < 20.0:
        # Two corners on one side: the third finder is a side's length across from one.
        axes = (along, across)
        places = [a + across * span, a - across * span, b + across * span, b - across * span]
    elif abs(angle - 45.0) < 20.0:
        # Opposite corners: the third is one of the two other corners of the square.
        middle, half = (a + b) / 2.0, np.array((-(b - a)[1], (b - a)[0])) / 2.0
        places = [middle + half, middle - half]
        axes = ((along + across) / np.sqrt(2.0), (across - along) / np.sqrt(2.0))
    else:
        return []
    margin = 3.5 * module
    return [
        _draw_finder(gray.copy(), place, axes, module)
        for place in places
        if margin <= place[0] <= width - margin and margin <= place[1] <= height - margin
    ]


def _draw_finder(
    image: np.ndarray, centre: np.ndarray, axes: tuple[np.ndarray, np.ndarray], module: float
) -> np.ndarray:
    """A finder pattern with its light separator, along the symbol's own axes."""
    u, v = axes
    for half, value in ((4.5, 255), (3.5, 0), (2.5, 255), (1.5, 0)):
        corners = [centre + (su * u + sv * v) * half * module for su, sv in _SQUARE]
        points = np.rint(np.array(corners) * 16.0).astype(np.int32)  # 4 fractional bits
        cv2.fillConvexPoly(image, points, value, cv2.LINE_AA, 4)
    return image


_SQUARE = ((-1, -1), (1, -1), (1, 1), (-1, 1))
