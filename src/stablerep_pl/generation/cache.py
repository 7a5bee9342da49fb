"""Keep what a generator rendered, so a multi-epoch run renders each image once.

The paper renders its k images per caption once and trains on them for many epochs; rendering on
the fly re-renders every drawn image each time its caption comes round. An image is fixed by its
(caption key, index) and the generator's seed and settings, so remembering it changes nothing the
model sees (tested with `torch.equal` on three epochs of batches) and only removes repeated work. Each DataLoader
worker keeps its own cache (workers are persistent, so it lives for the whole run).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from PIL import Image

from stablerep_pl.generation.base import ImageGenerator, ImageRequest


class CachedGenerator(ImageGenerator):
    """`generator`'s images, each rendered once and kept (least recently used dropped past `max_images`).

    Memory: `max_images` × one image (32 px RGB: 3 KB, so the quickstart's 40 960 images take 126 MB;
    256 px: 197 KB). A sweep's copies (`with_settings`) get their own empty cache, since the
    overrides change the images.
    """

    def __init__(self, generator: ImageGenerator, max_images: int = 50_000) -> None:
        if not isinstance(generator, ImageGenerator):
            raise TypeError(f"generator must be an ImageGenerator, got {type(generator).__name__}")
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        super().__init__(seed=generator.seed, batch_size=generator.batch_size)
        self.generator, self.max_images = generator, int(max_images)
        self.SETTINGS = generator.SETTINGS
        self._images: OrderedDict[tuple[str, int], Image.Image] = OrderedDict()
        self.rendered = 0  # images actually rendered by this copy (the rest came from the cache)

    def seed_for(self, key: str, index: int) -> int:
        return self.generator.seed_for(key, index)

    def _apply_settings(self, overrides: dict[str, Any]) -> None:
        self.generator = self.generator.with_settings(**overrides)
        self._images, self.rendered = OrderedDict(), 0

    def render(self, requests: Sequence[ImageRequest]) -> list[Image.Image]:
        addresses = [(r.key, r.index) for r in requests]
        missing = list(dict.fromkeys(r for r, a in zip(requests, addresses) if a not in self._images))
        if missing:
            for request, image in zip(missing, self.generator.render(missing)):
                self._images[(request.key, request.index)] = image
            self.rendered += len(missing)
        for address in addresses:
            self._images.move_to_end(address)
        images = [self._images[address] for address in addresses]
        while len(self._images) > self.max_images:
            self._images.popitem(last=False)
        return images

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"], state["rendered"] = OrderedDict(), 0  # workers fill their own
        return state

    def provenance(self) -> dict[str, Any]:
        return self.generator.provenance()
