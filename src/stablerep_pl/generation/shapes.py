"""Drawing helpers of the procedural renderer: object outlines, textures and backgrounds.

Everything is vectorised (PIL polygon rasterisation, numpy array maths) so one image costs about a
millisecond and training can render on the fly in DataLoader workers.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

Polygon = np.ndarray  # [n, 2] float vertices, x right, y down (image convention)

# Approximate mean colour of each background, used to avoid (or outline) objects that would vanish.
BACKGROUND_TONES: dict[str, tuple[int, int, int] | None] = {
    "white": (242, 242, 242),
    "black": (18, 18, 18),
    "grey": (128, 128, 128),
    "sky": (150, 189, 241),
    "grass": (70, 150, 55),
    "sand": (225, 200, 145),
    "brick": (172, 91, 73),
    "noise": None,  # colourful: every colour stays visible
}
CLASH_DISTANCE = 90.0


def clashes(colour: tuple[float, float, float], background: str) -> bool:
    """True when an object of `colour` would be hard to see on `background`."""
    tone = BACKGROUND_TONES[background]
    return tone is not None and math.dist(colour, tone) < CLASH_DISTANCE


def _circle(
    n: int = 48, radius: float = 1.0, cx: float = 0.0, cy: float = 0.0, start: float = 0.0
) -> Polygon:
    """Regular n-gon (a circle for large n) starting at angle `start`."""
    t = start + np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _raw_shape(name: str) -> list[tuple[Polygon, bool]]:
    """Unnormalised outlines as (polygon, is_fill) pairs; holes are drawn after fills."""
    if name == "circle":
        return [(_circle(), True)]
    if name == "square":
        return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), True)]
    if name == "triangle":
        return [(_circle(3, start=-math.pi / 2), True)]
    if name == "star":
        t = -math.pi / 2 + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [(np.stack([r * np.cos(t), r * np.sin(t)], axis=1), True)]
    if name == "heart":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x, y], axis=1), True)]
    if name == "cross":
        a, b = 0.3, 1.0
        pts = [
            (-a, -b),
            (a, -b),
            (a, -a),
            (b, -a),
            (b, a),
            (a, a),
            (a, b),
            (-a, b),
            (-a, a),
            (-b, a),
            (-b, -a),
            (-a, -a),
        ]
        return [(np.array(pts, float), True)]
    if name == "ring":
        return [(_circle(), True), (_circle(radius=0.55), False)]
    if name == "crescent":
        return [(_circle(), True), (_circle(radius=0.8, cx=0.6, cy=-0.15), False)]
    if name == "arrow":
        pts = [(-1, -0.22), (0.15, -0.22), (0.15, -0.62), (1, 0), (0.15, 0.62), (0.15, 0.22), (-1, 0.22)]
        return [(np.array(pts, float), True)]
    if name == "ellipse":
        return [(_circle() * np.array([1.0, 0.48]), True)]
    if name == "semicircle":
        return [(_circle(48, start=math.pi)[:25], True)]  # top half of the disc plus its diameter
    if name == "hourglass":
        pts = [(-0.7, -1), (0.7, -1), (0.12, 0), (0.7, 1), (-0.7, 1), (-0.12, 0)]
        return [(np.array(pts, float), True)]
    raise ValueError(f"no outline for object {name!r}")


@functools.cache
def unit_shape(name: str) -> tuple[tuple[Polygon, bool], ...]:
    """Outline centred on its area centroid with every filled point within radius 1.

    Centring on the centroid makes the mask centroid land where the object was placed whatever the
    rotation, and radius 1 lets the renderer keep any rotated object inside the frame.
    """
    parts = _raw_shape(name)
    fills = np.concatenate([p for p, fill in parts if fill])
    centre = (fills.min(0) + fills.max(0)) / 2
    scale = np.hypot(*(fills - centre).T).max()
    parts = [((p - centre) / scale, fill) for p, fill in parts]
    # Rasterise once to get the area centroid and the extent of what is actually filled (holes and
    # non-convex outlines alike), then re-centre and re-scale.
    res, half = 512, 254.0
    mask = np.asarray(draw_mask(parts, res, res / 2, res / 2, half, 0.0), bool)
    ys, xs = np.nonzero(mask)
    px = (np.stack([xs, ys], 1) + 0.5 - res / 2) / half
    centroid = px.mean(0)
    radius = np.hypot(*(px - centroid).T).max() + 2.0 / half
    return tuple(((p - centroid) / radius, fill) for p, fill in parts)


def draw_mask(
    parts: list[tuple[Polygon, bool]] | tuple[tuple[Polygon, bool], ...],
    canvas: int,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
) -> Image.Image:
    """Rasterise outlines scaled by `radius`, rotated by `angle` and centred at (cx, cy) into an L mask."""
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]]) * radius
    for fill in (True, False):
        for poly, is_fill in parts:
            if is_fill == fill:
                xy = poly @ rot + (cx, cy)
                draw.polygon([tuple(v) for v in xy.tolist()], fill=255 if fill else 0)
    return mask


def texture_weight(texture: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray | None:
    """Weight of the secondary colour at object-frame coordinates (u, v in radii); None for plain."""
    if texture == "plain":
        return None
    period = 0.5  # four stripes / checks across the object
    if texture == "striped":
        return (np.floor(u / period + phase) % 2).astype(np.float32)
    if texture == "checkered":
        return ((np.floor(u / period + phase) + np.floor(v / period + phase)) % 2).astype(np.float32)
    if texture == "dotted":
        du = (u / period + phase) % 1.0 - 0.5
        dv = (v / period + phase) % 1.0 - 0.5
        return (du * du + dv * dv < 0.3**2).astype(np.float32)
    if texture == "gradient":
        return np.clip((v + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}")


def secondary_colour(colour: np.ndarray) -> np.ndarray:
    """The second colour of a texture: a darker shade of light colours, a lighter tint of dark ones."""
    luminance = float(colour @ np.array([0.299, 0.587, 0.114]))
    return colour * 0.45 if luminance > 110 else colour + (255 - colour) * 0.55


def _blocks(
    rng: np.random.Generator, canvas: int, block: int, shape: tuple[int, ...], scale: float
) -> np.ndarray:
    """Coarse noise upsampled by `block` (nearest), cropped to the canvas."""
    n = -(-canvas // block)
    coarse = rng.normal(0.0, scale, size=(n, n, *shape)).astype(np.float32)
    return np.repeat(np.repeat(coarse, block, 0), block, 1)[:canvas, :canvas]


def render_background(
    name: str, canvas: int, rng: np.random.Generator, brightness: float = 1.0
) -> np.ndarray:
    """[canvas, canvas, 3] float32 in 0-255; patterns are scaled to the canvas so they read at any size."""
    yy = np.linspace(0.0, 1.0, canvas, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, canvas, dtype=np.float32)[None, :]
    if name in ("white", "black", "grey"):
        image = np.broadcast_to(np.array(BACKGROUND_TONES[name], np.float32), (canvas, canvas, 3)).copy()
    elif name == "sky":
        top, bottom = np.array([95, 150, 232], np.float32), np.array([205, 228, 250], np.float32)
        image = np.broadcast_to(top + (bottom - top) * yy[..., None], (canvas, canvas, 3)).copy()
    elif name == "grass":
        blades = np.repeat(rng.normal(0.0, 1.0, size=(-(-canvas // 8), canvas)).astype(np.float32), 8, 0)[
            :canvas
        ]
        blades += rng.normal(0.0, 0.5, size=(canvas, canvas)).astype(np.float32)
        image = np.array([70, 150, 55], np.float32) + blades[..., None] * np.array([10, 24, 8], np.float32)
    elif name == "sand":
        ripple = np.sin(2 * np.pi * (yy * 6 + 0.4 * np.sin(2 * np.pi * xx * 1.5) + rng.random()))
        grain = rng.normal(0.0, 9.0, size=(canvas, canvas)).astype(np.float32)
        image = np.array([225, 200, 145], np.float32) + (ripple * 8 + grain)[..., None]
    elif name == "brick":
        h = canvas / 6.0
        y = yy * canvas + rng.random() * h
        row = np.floor(y / h)
        x = xx * canvas + rng.random() * 2 * h + (row % 2) * h
        col = np.floor(x / (2 * h))
        mortar = ((y % h) < 0.14 * h) | ((x % (2 * h)) < 0.14 * h)
        shade = np.sin(row * 12.9898 + col * 78.233) * 43758.5453 % 1.0  # per-brick variation
        brick = np.array([165, 65, 45], np.float32) * (0.85 + 0.3 * shade)[..., None]
        image = np.where(mortar[..., None], np.array([205, 200, 190], np.float32), brick)
    elif name == "noise":
        image = 128.0 + _blocks(rng, canvas, max(1, canvas // 16), (3,), 40.0)
    else:
        raise ValueError(f"unknown background {name!r}")
    return np.clip(image * brightness, 0.0, 255.0)


class Clutter(NamedTuple):
    """One distractor: an ellipse (box) or a line (endpoints + width), behind or in front of the object."""

    front: bool
    kind: str  # "blob" or "line"
    geometry: tuple[float, ...]
    fill: tuple[int, int, int]


def draw_clutter(draw: ImageDraw.ImageDraw, item: Clutter, fill: Any) -> None:
    if item.kind == "blob":
        draw.ellipse(item.geometry, fill=fill)
    else:
        draw.line(item.geometry[:4], fill=fill, width=int(item.geometry[4]))
