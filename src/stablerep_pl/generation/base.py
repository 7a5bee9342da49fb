"""The generator interface shared by the procedural renderer and Stable Diffusion.

Every image is addressed by (caption key, image index) and its seed is derived from that address
and the generator's base seed, so any single image can be regenerated alone and batching never
changes what is rendered.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from stablerep_pl.captions.keys import caption_key


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
    caption-level entry point used by data modules and `stablerep render`.
    """

    def __init__(self, seed: int = 0, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    def seed_for(self, key: str, index: int) -> int:
        return image_seed(key, index, self.seed)

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
        images: list[Image.Image] = []
        for start in range(0, len(requests), self.batch_size):
            images.extend(self.render(requests[start : start + self.batch_size]))
        return [images[i * images_per_caption : (i + 1) * images_per_caption] for i in range(len(captions))]

    def provenance(self) -> dict[str, Any]:
        """What is needed to regenerate an image, recorded next to every rendered sample."""
        return {"generator": f"{type(self).__module__}.{type(self).__qualname__}", "base_seed": self.seed}
