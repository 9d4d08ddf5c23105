"""A pinhole camera looking at a flat or bent page lying on a desk.

Where degrade.perspective jitters four corners at random, this module poses the
page in 3-D (pitch, yaw, roll, camera distance) and projects it, so that strong
tilts foreshorten the way real photos do, any in-plane angle is possible, and a
page bent around a cylinder can be photographed with the same pose.  Quads are
mapped through the same geometry as the pixels, in the pixel-edge convention of
geometry.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from .degrade import desk_texture
from .geometry import Quads, apply_homography

Image = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float64]

_OFF_PAGE = 1e6  # a source coordinate that cv2.remap leaves transparent
_MIN_WARP_SCALE = 0.8  # below this, shrink with area averaging first to avoid aliasing


@dataclass(frozen=True)
class Pose:
    """Where the camera is relative to the page.

    Angles are in degrees: ``pitch`` tips the page's top edge away, ``yaw``
    turns its right edge away, ``roll`` turns the page counter-clockwise in the
    frame.  ``distance`` is in page diagonals; closer means stronger
    foreshortening.  ``fill`` is the share of the frame the page's outline
    spans along its tighter axis, and ``shift`` moves it off centre (fractions
    of the free margin, -1 to 1).
    """

    pitch: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0
    distance: float = 1.5
    fill: float = 0.9
    shift: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Bend:
    """A page bent around a cylinder, e.g. curling off a desk or wrapped on a binder.

    ``angle`` (degrees) is how far the surface turns at the page edge farther
    from the cylinder's crest, which sits at ``crest`` (0-1 across the page).
    ``vertical`` puts the cylinder's axis along the page's height; ``toward``
    curls the edges toward the camera instead of away from it.  ``shading``
    darkens surfaces that turn away from the light (0 = none).
    """

    angle: float
    crest: float = 0.5
    vertical: bool = True
    toward: bool = False
    shading: float = 0.0


def photograph(
    image: Image,
    quads: Quads,
    rng: np.random.Generator,
    pose: Pose,
    *,
    megapixels: float | None = None,
    scale: float | None = None,
) -> tuple[Image, Quads]:
    """Photograph a flat page onto a desk.

    The frame is 3:4, portrait or landscape, whichever the posed page fits
    better, and is sized by ``megapixels`` or, given ``scale``, so that the
    page appears ``scale`` times its size in pixels (the frame grows around it).
    """
    h, w = image.shape[:2]
    frame_w, frame_h, dst = _posed_corners(w, h, pose, megapixels=megapixels, scale=scale)
    flat = _page_corners(w, h)
    # Shrink first when the photo is much smaller than the page: a plain
    # linear warp would alias fine modules into moire instead of blurring them.
    shrink = min(1.0, _area_scale(flat, dst) / _MIN_WARP_SCALE)
    if shrink < 1.0:
        image, quads, flat = _shrink(image, quads, shrink)
    matrix = _homography(flat, dst)
    canvas = desk_texture(rng, frame_h, frame_w)
    paper = _paper(image, rng)
    cv2.warpPerspective(
        paper,
        matrix,
        (frame_w, frame_h),
        dst=canvas,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return canvas, apply_homography(quads, matrix)


def posed_quads(
    width: int,
    height: int,
    quads: Quads,
    pose: Pose,
    *,
    megapixels: float | None = None,
    scale: float | None = None,
) -> Quads:
    """Where ``photograph`` would put ``quads``, without rendering anything.

    With ``scale`` every distance in the photo is proportional to it, so one
    call at scale 1 tells the scale that gives a code a wanted module size.
    """
    _, _, dst = _posed_corners(width, height, pose, megapixels=megapixels, scale=scale)
    return apply_homography(quads, _homography(_page_corners(width, height), dst))


def photograph_bent(
    image: Image,
    quads: Quads,
    rng: np.random.Generator,
    pose: Pose,
    bend: Bend,
    *,
    megapixels: float,
) -> tuple[Image, Quads]:
    """Photograph a page bent around a cylinder.

    The cylinder is seen head-on from ``pose.distance`` first, which curves
    the lines running along its axis; the pose's tilt and roll are then
    applied to that view as a homography.  Pixels are pulled through the
    exact inverse of the same mapping that moves the quads, so a code's
    truth corners are its warped corners.
    """
    h, w = image.shape[:2]
    limit = max_bend(w, h, bend, pose.distance)
    if bend.angle > limit + 1e-6:
        raise ValueError(
            f"a {bend.angle:.0f} degree bend hides the page's edge; at most {limit:.0f}"
        )
    cylinder = _Cylinder.fit(w, h, bend, pose.distance * np.hypot(w, h))
    outline = cylinder.forward(_outline(w, h))
    centre = (outline.min(axis=0) + outline.max(axis=0)) / 2
    projected = _project(outline - centre, pose, np.hypot(w, h))
    frame_w, frame_h, dst = _frame(projected, pose, megapixels=megapixels, page=(w, h))
    # One homography maps the head-on cylinder view to the tilted photo; fit it
    # on the outline points, which all lie on that view's plane.
    matrix, _ = cv2.findHomography(outline - centre, dst, 0)
    to_frame = matrix @ np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]])
    map_x, map_y, theta = _bent_maps(cylinder, np.linalg.inv(to_frame), frame_w, frame_h)
    canvas = desk_texture(rng, frame_h, frame_w)
    cv2.remap(
        _paper(image, rng),
        map_x,
        map_y,
        cv2.INTER_LINEAR,
        dst=canvas,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    if bend.shading > 0:
        canvas = _shade(canvas, theta, bend.shading, (map_x, map_y), (w, h))
    flat = quads.reshape(-1, 2)
    moved = _apply_pixel_edge_homography(cylinder.forward(flat), to_frame)
    return canvas, moved.reshape(quads.shape)


# --- projection -------------------------------------------------------------------------------


def _posed_corners(
    w: int, h: int, pose: Pose, *, megapixels: float | None, scale: float | None
) -> tuple[int, int, Points]:
    """Frame size and where the page's corners land in it."""
    projected = _project(_page_corners(w, h) - np.array([w / 2, h / 2]), pose, np.hypot(w, h))
    return _frame(projected, pose, megapixels=megapixels, scale=scale, page=(w, h))


def _homography(src: Points, dst: Points) -> npt.NDArray[np.float64]:
    """Pixel-edge corners in, OpenCV's pixel-centre matrix out."""
    return cv2.getPerspectiveTransform(
        (src - 0.5).astype(np.float32), (dst - 0.5).astype(np.float32)
    ).astype(np.float64)


def _page_corners(w: int, h: int) -> Points:
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)


def _outline(w: int, h: int, steps: int = 16) -> Points:
    """Points along the page border: a bent page's outline is no longer four corners."""
    t = np.linspace(0.0, 1.0, steps, endpoint=False)
    top = np.stack([t * w, np.zeros_like(t)], axis=1)
    right = np.stack([np.full_like(t, w), t * h], axis=1)
    bottom = np.stack([(1 - t) * w, np.full_like(t, h)], axis=1)
    left = np.stack([np.zeros_like(t), (1 - t) * h], axis=1)
    return np.concatenate([top, right, bottom, left])


def _rotation(pose: Pose) -> npt.NDArray[np.float64]:
    p, y, r = np.deg2rad([pose.pitch, pose.yaw, pose.roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    # Roll is counter-clockwise as seen in the photo, whose y axis points down.
    rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _project(points: Points, pose: Pose, diagonal: float) -> Points:
    """Pinhole projection of page-plane points (centred on the page) at unit central scale."""
    xyz = np.hstack([points, np.zeros((len(points), 1))]) @ _rotation(pose).T
    depth = pose.distance * diagonal
    return xyz[:, :2] * depth / (xyz[:, 2:3] + depth)


def _frame(
    projected: Points,
    pose: Pose,
    *,
    megapixels: float | None = None,
    scale: float | None = None,
    page: tuple[int, int],
) -> tuple[int, int, Points]:
    """Pick the frame size and place the projected outline in it."""
    lo, hi = projected.min(axis=0), projected.max(axis=0)
    extent = hi - lo
    aspects = (0.75, 4 / 3)  # width / height: portrait or landscape
    if scale is None:
        pixels = megapixels * 1e6 if megapixels is not None else float(page[0] * page[1])
        # Same pixel count either way: take the orientation the page fills best.
        sizes = [np.array([np.sqrt(pixels * a), np.sqrt(pixels / a)]) for a in aspects]
        size = max(sizes, key=lambda s: float(np.min(s / extent)))
        fit = float(np.min(size / extent)) * pose.fill
    else:
        # Fixed page scale: the smallest frame that leaves the asked-for margin.
        need = extent * scale / pose.fill
        sizes = [np.array([max(need[0], need[1] * a), max(need[1], need[0] / a)]) for a in aspects]
        size = min(sizes, key=lambda s: float(s[0] * s[1]))
        fit = scale
    frame_w, frame_h = round(size[0]), round(size[1])
    free = np.array([frame_w, frame_h]) - extent * fit
    offset = free / 2 * (1 + np.clip(np.asarray(pose.shift, np.float64), -1, 1))
    return frame_w, frame_h, (projected - lo) * fit + offset


def _area_scale(src: Points, dst: Points) -> float:
    return float(np.sqrt(abs(_polygon_area(dst)) / abs(_polygon_area(src))))


def _polygon_area(points: Points) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _shrink(image: Image, quads: Quads, factor: float) -> tuple[Image, Quads, Points]:
    h, w = image.shape[:2]
    new_w, new_h = max(8, round(w * factor)), max(8, round(h * factor))
    out = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # cv2.resize maps pixel edges linearly, so corners scale exactly.
    return out, quads * np.array([new_w / w, new_h / h]), _page_corners(new_w, new_h)


def _paper(image: Image, rng: np.random.Generator) -> Image:
    """Paper under room light: a slight colour cast, always in colour on a desk."""
    paper = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    tint = tuple(float(c) for c in rng.uniform(0.85, 1.0, size=3))
    return cv2.multiply(paper, (*tint, 1.0), dtype=cv2.CV_8U)


def _apply_pixel_edge_homography(points: Points, matrix: npt.NDArray[np.float64]) -> Points:
    homog = np.hstack([points, np.ones((len(points), 1))]) @ matrix.T
    return homog[:, :2] / homog[:, 2:3]


# --- the cylinder -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cylinder:
    """Page-to-view mapping of a bent page seen head-on, in pixel-edge coordinates.

    ``across`` runs around the cylinder and ``along`` its axis; the view keeps
    the page's pixel scale at the crest.
    """

    radius: float
    crest: float  # position of the crest across the page, in pixels
    middle: float  # position of the optical centre along the axis, in pixels
    depth: float  # camera distance from the crest, in pixels
    sign: float  # +1: edges bend away from the camera, -1: toward it
    vertical: bool

    @classmethod
    def fit(cls, w: int, h: int, bend: Bend, depth: float) -> _Cylinder:
        across, along = (w, h) if bend.vertical else (h, w)
        crest = bend.crest * across
        reach = max(crest, across - crest)
        radius = reach / np.deg2rad(max(bend.angle, 1e-3))
        sign = -1.0 if bend.toward else 1.0
        return cls(radius, crest, along / 2, depth, sign, bend.vertical)

    def _split(self, points: Points) -> tuple[Points, Points]:
        a, b = (points[:, 0], points[:, 1]) if self.vertical else (points[:, 1], points[:, 0])
        return a, b

    def _join(self, u: Points, v: Points) -> Points:
        return np.stack([u, v] if self.vertical else [v, u], axis=-1)

    def _view(self, theta: Points) -> tuple[Points, Points]:
        """Across-axis view coordinate and depth factor for surface angles ``theta``."""
        z = self.sign * self.radius * (1 - np.cos(theta))
        factor = self.depth / (self.depth + z)
        return self.radius * np.sin(theta) * factor, factor

    def forward(self, points: Points) -> Points:
        a, b = self._split(points)
        u, factor = self._view((a - self.crest) / self.radius)
        return self._join(u + self.crest, (b - self.middle) * factor + self.middle)

    def inverse(
        self, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Page coordinates and surface angle behind view points (arrays of any shape)."""
        u, v = (x, y) if self.vertical else (y, x)
        u = u - np.float32(self.crest)
        d, r, s = self.depth, self.radius, self.sign
        # u = d r sin(t) / (d + s r (1 - cos(t))) rearranges to
        # A sin(t) + B cos(t) = C, solved in closed form; the principal
        # branch is the side of the cylinder that faces the camera.
        a_coef = np.float32(d * r)
        b_coef = np.float32(s * r) * u
        c = np.float32(d + s * r) * u
        ratio = c / np.sqrt(a_coef * a_coef + b_coef * b_coef)
        theta = np.arcsin(np.clip(ratio, -1, 1)) - np.arctan2(b_coef, a_coef)
        factor = np.float32(d) / (np.float32(d + s * r) - np.float32(s * r) * np.cos(theta))
        across = np.float32(self.crest) + theta * np.float32(r)
        # Past the silhouette there is no page: send those pixels off it.
        across[np.abs(ratio) > 1] = -_OFF_PAGE
        along = (v - np.float32(self.middle)) / factor + np.float32(self.middle)
        page_x, page_y = (across, along) if self.vertical else (along, across)
        return page_x, page_y, theta


def max_bend(width: int, height: int, bend: Bend, distance: float) -> float:
    """The largest bend angle (degrees) that keeps the whole page well on the camera's side.

    Bent away, a page's far edge nears the cylinder's silhouette, where it is
    foreshortened to nothing and then hidden; a code there would be invisible
    yet still in the ground truth.  This keeps the edge's foreshortening at
    no more than about three times the crest's.  Curling toward the camera
    never hides anything.
    """
    if bend.toward:
        return 80.0
    across = width if bend.vertical else height
    reach = max(bend.crest, 1 - bend.crest) * across
    depth = distance * np.hypot(width, height)
    lo, hi = 1.0, 80.0
    for _ in range(30):
        mid = (lo + hi) / 2
        radius = reach / np.deg2rad(mid)
        if (depth + radius) * np.cos(np.deg2rad(mid)) - radius >= 0.3 * depth:
            lo = mid
        else:
            hi = mid
    return lo


def _bent_maps(
    cylinder: _Cylinder, to_view: npt.NDArray[np.float64], frame_w: int, frame_h: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """cv2.remap maps (pixel-centre source coordinates) and the surface angle per pixel.

    Computed exactly at every pixel: near the silhouette the mapping is too
    steep for a coarse grid, which would fray the page edge into steps.
    """
    m = to_view.astype(np.float32)
    xs = np.arange(frame_w, dtype=np.float32)[None, :] + np.float32(0.5)
    ys = np.arange(frame_h, dtype=np.float32)[:, None] + np.float32(0.5)
    w = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
    view_x = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / w
    view_y = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / w
    page_x, page_y, theta = cylinder.inverse(view_x, view_y)
    return page_x - np.float32(0.5), page_y - np.float32(0.5), theta


def _shade(
    canvas: Image,
    theta: npt.NDArray[np.float32],
    shading: float,
    maps: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    size: tuple[int, int],
) -> Image:
    """Darken the page where its surface turns away from a light above the crest."""
    gain = (1.0 - shading * (1.0 - np.cos(theta))).astype(np.float32)
    map_x, map_y = maps
    off_page = (map_x < -1) | (map_x > size[0]) | (map_y < -1) | (map_y > size[1])
    gain[off_page] = 1.0
    if canvas.ndim == 3:
        gain = cv2.merge([gain] * canvas.shape[2])
    return cv2.multiply(canvas, gain, dtype=cv2.CV_8U)
