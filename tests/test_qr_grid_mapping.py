"""The soft decoder's module -> pixel mapping (worker.engine.qr.grid.Mapping) and the finder
and timing modules outline_sizes samples: evaluated at a few points some 150 times a decode,
they are written for numpy's per-call cost, and must give what the plain formulas give."""

from __future__ import annotations

import numpy as np

from worker.engine.qr import grid


def test_a_mapping_is_its_homography_and_off_the_image_behind_the_horizon() -> None:
    h = np.array([[3.0, 0.4, 10.0], [-0.2, 2.5, 20.0], [0.01, 0.02, 1.0]])
    rng = np.random.default_rng(0)
    points = np.vstack([rng.uniform(0, 40, (50, 2)), [[-100.0, 0.0], [-50.0, -25.0]]])
    mapped = grid.Mapping(h)(points)
    x, y = points[:, 0], points[:, 1]
    den = x * h[2, 0] + y * h[2, 1] + h[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.stack(
            [
                (x * h[0, 0] + y * h[0, 1] + h[0, 2]) / den,
                (x * h[1, 0] + y * h[1, 1] + h[1, 2]) / den,
            ],
            axis=1,
        )
    # (-100, 0) lies on the horizon (den 0: infinite), (-50, -25) on it too (0/0: NaN): a
    # degenerate fit samples off the image, not at NaN.
    assert not np.isfinite(expected[-2:]).any()
    assert np.array_equal(mapped[-2:], np.full((2, 2), -1e4))
    assert np.array_equal(mapped[:-2], expected[:-2])
    # One point as a flat pair, as callers pass it.
    assert np.array_equal(
        grid.Mapping(h)(np.array([3.0, 4.0])), grid.Mapping(h)(np.array([[3.0, 4.0]]))
    )


def test_a_mapping_with_anchors_adds_the_residual_field() -> None:
    h = np.array([[3.0, 0.0, 5.0], [0.0, 3.0, 7.0], [0.0, 0.0, 1.0]])
    anchors = np.array([[6.5, 6.5], [18.5, 6.5], [6.5, 18.5], [18.5, 18.5]])
    residuals = np.array([[0.5, -0.25], [0.0, 0.75], [-0.5, 0.0], [0.25, 0.25]])
    mapping = grid.Mapping(h, anchors, residuals, sigma=4.0)
    points = np.random.default_rng(1).uniform(0, 25, (30, 2))
    d2 = ((points[:, None, :] - anchors[None, :, :]) ** 2).sum(axis=2)
    field = np.exp(-d2 / (2 * 4.0**2)) @ mapping.weights
    assert np.array_equal(mapping(points), grid.Mapping(h)(points) + field)
    # Through the anchors' residuals, up to the light regularisation.
    assert np.abs(mapping(anchors) - grid.Mapping(h)(anchors) - residuals).max() < 0.1


def test_the_outline_modules_of_every_size_are_made_once() -> None:
    sizes = (21, 25, 29, 33)
    points, colours, counts, starts = grid._outline_points(sizes)
    assert grid._outline_points(sizes)[0] is points
    assert not points.flags.writeable and not colours.flags.writeable
    for size, count, start in zip(sizes, counts, starts, strict=True):
        rows, cols, dark = grid._outline_modules(size)
        assert count == len(rows)
        assert np.array_equal(
            points[start : start + count], np.stack([cols + 0.5, rows + 0.5], 1) / size
        )
        assert np.array_equal(colours[start : start + count], dark)
    assert starts[-1] + counts[-1] == len(points)
