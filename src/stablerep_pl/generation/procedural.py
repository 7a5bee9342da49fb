"""Offline procedural text-to-image generator: the embedded stand-in for Stable Diffusion.

A caption from `stablerep_pl.captions.grammar` is parsed and rendered as one object on a background.
What the caption says is what the image shows; what it leaves open (and every nuisance: pose, exact
scale and position, colour jitter, lighting, clutter, pixel noise) varies with the image seed, so the
images of one caption are positives that share exactly the caption's content. `diversity` plays the
role of (inverse) classifier-free guidance: 0 renders canonical images, 1 maximally varied ones;
a guidance sweep maps onto it with `diversity_for_guidance`.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from stablerep_pl.captions.grammar import (
    BACKGROUNDS,
    COLOURS,
    OBJECTS,
    POSITIONS,
    SIZES,
    TEXTURES,
    CaptionAttributes,
    parse_caption,
)
from stablerep_pl.generation.base import ImageGenerator, ImageRequest
from stablerep_pl.generation.shapes import (
    Clutter,
    clashes,
    draw_clutter,
    draw_mask,
    render_background,
    secondary_colour,
    texture_weight,
    unit_shape,
)

# Object radius (centroid to farthest point) as a fraction of the image side.
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.15, 0.20),
    "medium": (0.22, 0.28),
    "large": (0.30, 0.36),
}
# Position → (x, y) centre of the region and (x, y) half-width of the jitter at diversity 1, as
# fractions of the span the object's centre can take while staying inside the frame.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.12, 0.5, 0.12, 0.35),
    "right": (0.88, 0.5, 0.12, 0.35),
    "top": (0.5, 0.12, 0.35, 0.12),
    "bottom": (0.5, 0.88, 0.35, 0.12),
    "centre": (0.5, 0.5, 0.15, 0.15),
}
MARGIN = 0.02  # gap between the object and the frame, fraction of the side
# Nuisance amplitudes at diversity 1; small enough that a named colour stays its nearest COLOURS entry.
HUE_JITTER = 0.015  # ± fraction of the hue circle
VALUE_JITTER = 0.08  # ± relative brightness of the object colour
BACKGROUND_JITTER = 0.08  # ± relative brightness of the background
LIGHTING = 0.2  # relative brightness change per half image side, along a random direction
NOISE_STD = 6.0  # Gaussian pixel noise, 0-255 units
MAX_CLUTTER = 4
FRONT_CLUTTER_P = 0.35


def object_for_key(key: str) -> str:
    """Object shown for a caption that names none: fixed per caption key, so its images agree."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return OBJECTS[int.from_bytes(digest, "little") % len(OBJECTS)]


def diversity_for_guidance(guidance_scale: float) -> float:
    """The diversity standing in for a classifier-free guidance scale: 1 for g <= 1 (no guidance),
    else 1/g. Monotone decreasing, as SD's diversity falls with guidance; g = 2 (StableRep's choice)
    is diversity 0.5, the generator's default, and SimCLR's g = 8 is 0.125."""
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
    return 1.0 if guidance_scale <= 1 else 1.0 / guidance_scale


def _pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _jitter_colour(rgb: tuple[int, int, int], hue: float, value: float) -> np.ndarray:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    r, g, b = colorsys.hsv_to_rgb((h + hue) % 1.0, s, min(1.0, v * value))
    return np.array([r, g, b], np.float32) * 255.0


@functools.cache
def _ramp(size: int) -> np.ndarray:
    """Pixel centres in [-1, 1] along one axis, for the lighting gradient."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0


class ProceduralGenerator(ImageGenerator):
    """Renders one object per image; see the module docstring for what varies and what does not.

    A sweep may override `diversity`, or `guidance_scale`, which sets `diversity_for_guidance(g)`.
    """

    SETTINGS = ("diversity", "guidance_scale")

    def __init__(
        self,
        size: int = 64,
        diversity: float = 0.5,
        seed: int = 0,
        batch_size: int = 64,
        supersample: int = 2,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if size < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        self.size, self.diversity, self.supersample = int(size), float(diversity), int(supersample)
        self.check_settings()

    def check_settings(self) -> None:
        if not 0.0 <= self.diversity <= 1.0:
            raise ValueError(f"diversity must be in [0, 1], got {self.diversity}")

    def _apply_settings(self, overrides: dict[str, Any]) -> None:
        if "guidance_scale" in overrides:
            if "diversity" in overrides:
                raise ValueError("override diversity or guidance_scale, not both")
            overrides["diversity"] = diversity_for_guidance(float(overrides.pop("guidance_scale")))
        super()._apply_settings({k: float(v) for k, v in overrides.items()})

    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "size": self.size,
            "diversity": self.diversity,
            "supersample": self.supersample,
        }

    def render(self, requests: Sequence[ImageRequest]) -> list[Image.Image]:
        return [self._draw(request, want_mask=False)[0] for request in requests]

    def render_with_mask(self, request: ImageRequest) -> tuple[Image.Image, np.ndarray]:
        """The image of `request` and a bool [size, size] mask of its visible object.

        The mask is taken after clutter: pixels hidden by clutter drawn in front of the object are
        excluded, so the mask's pixels show the object's own colour (blended only at its edges).
        A pixel counts when the object covers at least half of it.
        """
        image, mask = self._draw(request, want_mask=True)
        assert mask is not None
        return image, mask

    def resolve_attributes(self, request: ImageRequest) -> CaptionAttributes:
        """The fully specified attributes image `request` shows (the caption's, plus the drawn ones)."""
        return self._resolve(request, np.random.default_rng(self.seed_for(request.key, request.index)))

    def _resolve(self, request: ImageRequest, rng: np.random.Generator) -> CaptionAttributes:
        said = parse_caption(request.caption)
        u = rng.random(5)  # always drawn, so the stream is the same whatever the caption names
        background = said.background
        if background is None:
            fits = [b for b in BACKGROUNDS if said.colour is None or not clashes(COLOURS[said.colour], b)]
            background = _pick(fits, u[0])
        colour = said.colour or _pick([c for c in COLOURS if not clashes(COLOURS[c], background)], u[1])
        return CaptionAttributes(
            object=said.object or object_for_key(request.key),
            colour=colour,
            texture=said.texture or _pick(TEXTURES, u[2]),
            background=background,
            size=said.size or _pick(SIZES, u[3]),
            position=said.position or _pick(POSITIONS, u[4]),
        )

    def _draw(self, request: ImageRequest, want_mask: bool) -> tuple[Image.Image, np.ndarray | None]:
        rng = np.random.default_rng(self.seed_for(request.key, request.index))
        attrs = self._resolve(request, rng)
        assert attrs.object and attrs.colour and attrs.texture and attrs.background
        assert attrs.size and attrs.position
        d, ss = self.diversity, self.supersample
        canvas = self.size * ss
        # Every draw happens whatever the diversity, so `diversity` only scales the nuisances.
        v = rng.uniform(-1.0, 1.0, size=10)
        background_seed, clutter_seed, noise_seed = (int(s) for s in rng.integers(2**63, size=3))

        lo, hi = SIZE_RANGES[attrs.size]
        radius = (lo + hi) / 2 + v[0] * d * (hi - lo) / 2
        tx, ty, jx, jy = REGIONS[attrs.position]
        low = radius + MARGIN
        cx = (low + (tx + v[1] * d * jx) * (1 - 2 * low)) * canvas
        cy = (low + (ty + v[2] * d * jy) * (1 - 2 * low)) * canvas
        radius *= canvas
        angle = v[3] * d * math.pi
        colour = _jitter_colour(COLOURS[attrs.colour], v[4] * d * HUE_JITTER, 1 + v[5] * d * VALUE_JITTER)

        # At diversity 0 the background pattern is canonical too (fixed per background).
        background_rng = np.random.default_rng(
            background_seed if d > 0 else BACKGROUNDS.index(attrs.background)
        )
        pixels = render_background(attrs.background, canvas, background_rng, 1 + v[6] * d * BACKGROUND_JITTER)
        image = Image.fromarray(pixels.astype(np.uint8), "RGB")
        clutter = self._clutter(np.random.default_rng(clutter_seed), canvas, colour)
        draw = ImageDraw.Draw(image)
        for item in clutter:
            if not item.front:
                draw_clutter(draw, item, item.fill)

        mask = draw_mask(unit_shape(attrs.object), canvas, cx, cy, radius, angle)
        if clashes(COLOURS[attrs.colour], attrs.background):  # named on a similar background: add a contour
            width = 2 * max(ss, round(0.06 * radius)) + 1  # at least one output pixel wide
            contour = (0, 0, 0) if float(colour @ np.array([0.299, 0.587, 0.114])) > 128 else (255, 255, 255)
            image.paste(contour, None, mask.filter(ImageFilter.MaxFilter(width)))
        self._paint_object(image, mask, attrs.texture, colour, cx, cy, radius, angle, (v[7] + 1) / 2 * d)

        mask_draw = ImageDraw.Draw(mask) if want_mask else None
        for item in clutter:
            if item.front:
                draw_clutter(draw, item, item.fill)
                if mask_draw is not None:
                    draw_clutter(mask_draw, item, 0)

        small = image.reduce(ss) if ss > 1 else image  # box filter over each ss×ss block: antialiasing
        out = np.asarray(small, np.float32)
        if d > 0:
            # A brightness ramp through the object's centre: strong across the image, neutral on
            # average over the object, so the named colour survives.
            ramp = _ramp(self.size)
            ox, oy = 2 * cx / canvas - 1, 2 * cy / canvas - 1
            c, s = math.cos(v[8] * math.pi), math.sin(v[8] * math.pi)
            shade = c * (ramp[None, :] - ox) + s * (ramp[:, None] - oy)
            out = out * (1.0 + d * LIGHTING * shade)[..., None]
            out = out + np.random.default_rng(noise_seed).normal(0.0, d * NOISE_STD, out.shape)
        result = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
        if not want_mask:
            return result, None
        coverage = np.asarray(mask, np.float32).reshape(self.size, ss, self.size, ss).mean(axis=(1, 3))
        return result, coverage >= 127.5

    @staticmethod
    def _paint_object(
        image: Image.Image,
        mask: Image.Image,
        texture: str,
        colour: np.ndarray,
        cx: float,
        cy: float,
        radius: float,
        angle: float,
        phase: float,
    ) -> None:
        """Fill the object's mask with its colour, textured in the object's own (rotated) frame."""
        canvas = image.size[0]
        x0, y0 = max(0, int(cx - radius) - 1), max(0, int(cy - radius) - 1)
        x1, y1 = min(canvas, int(cx + radius) + 2), min(canvas, int(cy + radius) + 2)
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
        c, s = math.cos(angle), math.sin(angle)
        weight = texture_weight(texture, (xs * c + ys * s) / radius, (ys * c - xs * s) / radius, phase)
        if weight is None:
            image.paste(tuple(int(x + 0.5) for x in colour), None, mask)
            return
        layer = colour + weight[..., None] * (secondary_colour(colour) - colour)
        patch = Image.fromarray(np.clip(layer + 0.5, 0, 255).astype(np.uint8), "RGB")
        box = (x0, y0, x1, y1)
        image.paste(patch, box, mask.crop(box))

    def _clutter(self, rng: np.random.Generator, canvas: int, colour: np.ndarray) -> list[Clutter]:
        """A few small blobs and lines in colours unlike the object's; more of them at higher diversity."""
        count = int(rng.integers(0, round(MAX_CLUTTER * self.diversity) + 1))
        others = [c for c in COLOURS.values() if math.dist(c, colour) > 110]
        items = []
        for _ in range(count):
            front = bool(rng.random() < FRONT_CLUTTER_P)
            fill = tuple(int(x) for x in others[int(rng.integers(len(others)))])
            x, y = rng.uniform(0, canvas, size=2)
            if rng.random() < 0.5:
                rx, ry = rng.uniform(0.025, 0.06, size=2) * canvas
                items.append(Clutter(front, "blob", (x - rx, y - ry, x + rx, y + ry), fill))
            else:
                length, theta = rng.uniform(0.15, 0.35) * canvas, rng.uniform(0, math.pi)
                dx, dy = length * math.cos(theta) / 2, length * math.sin(theta) / 2
                width = max(1, round(rng.uniform(0.012, 0.025) * canvas))
                items.append(Clutter(front, "line", (x - dx, y - dy, x + dx, y + dy, width), fill))
        return items
