"""The generator interface shared by the procedural renderer and Stable Diffusion.

Every image is addressed by (caption key, image index) and its seed is derived from that address
and the generator's base seed, so any single image can be regenerated alone and batching never
changes what is rendered.

A sweep (the paper varies the guidance scale, its key knob) renders the same images under several
settings: `with_settings(**overrides)` is a configured copy sharing what is loaded (weights), and
`render_variants` renders one batch of requests under several overrides at once, so a generator can
share work across them (Stable Diffusion encodes each prompt once). Seeds never depend on the
settings, so the variants of an image differ only in what was overridden.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from PIL import Image

from stablerep_pl.captions.keys import caption_key

G = TypeVar("G", bound="ImageGenerator")


def image_seed(key: str, index: int, base_seed: int) -> int:
    """Deterministic 63-bit seed of image `index` of caption `key` under `base_seed`."""
    digest = hashlib.blake2b(f"{key}/{index}/{base_seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class ImageRequest:
    """One image to render: image `index` of `caption`, addressed by `key`."""

    caption: str
    key: str
    index: int


class ImageGenerator(abc.ABC):
    """Captions in, k images per caption out.

    Subclasses implement `render` (a batch of independent requests); `generate` is the
    caption-level entry point used by data modules and `stablerep render`. `SETTINGS` names what
    `with_settings` may override (what a sweep varies); `check_settings` validates them.
    """

    SETTINGS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, seed: int = 0, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    def seed_for(self, key: str, index: int) -> int:
        return image_seed(key, index, self.seed)

    def check_settings(self) -> None:
        """Raise ValueError on an invalid setting (run by constructors and by `with_settings`)."""
        return None

    def with_settings(self: G, **overrides: Any) -> G:
        """A copy rendering with `overrides` (names in `SETTINGS`) that shares loaded state (weights).

        Seeds stay those of this generator, so the copy renders the same images up to the overrides.
        """
        unknown = sorted(set(overrides) - set(self.SETTINGS))
        if unknown:
            allowed = ", ".join(self.SETTINGS) or "nothing"
            raise ValueError(
                f"{type(self).__name__} cannot override {', '.join(unknown)} (it can: {allowed})"
            )
        clone = object.__new__(type(self))  # not copy.copy: that honours __getstate__, which drops weights
        clone.__dict__.update(self.__dict__)
        clone._apply_settings(dict(overrides))
        clone.check_settings()
        return clone

    def _apply_settings(self, overrides: dict[str, Any]) -> None:
        """Set `overrides` on this (fresh) copy; subclasses translate names or rebuild derived state."""
        for name, value in overrides.items():
            setattr(self, name, value)

    def render_variants(
        self, requests: Sequence[ImageRequest], variants: Sequence[Mapping[str, Any]]
    ) -> list[list[Image.Image]]:
        """`requests` rendered once per entry of `variants` (overrides; `{}` = this generator as is).

        Equal to `with_settings(**variant).render(requests)` for each variant; subclasses override it
        to share work across the variants.
        """
        return [(self.with_settings(**v) if v else self).render(requests) for v in variants]

    @abc.abstractmethod
    def render(self, requests: Sequence[ImageRequest]) -> list[Image.Image]:
        """Render one RGB image per request; the result must not depend on how requests are batched."""

    def generate(
        self,
        captions: Sequence[str],
        images_per_caption: int,
        keys: Sequence[str] | None = None,
    ) -> list[list[Image.Image]]:
        """Render `images_per_caption` images for every caption, batching across captions."""
        return self.generate_variants(captions, images_per_caption, keys, [{}])[0]

    def generate_variants(
        self,
        captions: Sequence[str],
        images_per_caption: int,
        keys: Sequence[str] | None,
        variants: Sequence[Mapping[str, Any]],
    ) -> list[list[list[Image.Image]]]:
        """`generate` under every variant: `[variant][caption][image]`, batched as `generate` batches."""
        if images_per_caption < 1:
            raise ValueError(f"images_per_caption must be >= 1, got {images_per_caption}")
        if keys is None:
            keys = [caption_key(c) for c in captions]
        if len(keys) != len(captions):
            raise ValueError(f"{len(captions)} captions but {len(keys)} keys")
        requests = [
            ImageRequest(caption, key, index)
            for caption, key in zip(captions, keys)
            for index in range(images_per_caption)
        ]
        images: list[list[Image.Image]] = [[] for _ in variants]
        for start in range(0, len(requests), self.batch_size):
            rendered = self.render_variants(requests[start : start + self.batch_size], variants)
            for collected, batch in zip(images, rendered):
                collected.extend(batch)
        k = images_per_caption
        return [[flat[i * k : (i + 1) * k] for i in range(len(captions))] for flat in images]

    def provenance(self) -> dict[str, Any]:
        """What is needed to regenerate an image, recorded next to every rendered sample."""
        return {"generator": f"{type(self).__module__}.{type(self).__qualname__}", "base_seed": self.seed}
