"""Serve every generated caption group several times, so slow generators do not starve training.

With Stable Diffusion on the fly, rendering k images of a caption costs far more than a training
step on them. `ReuseBufferDataset` keeps a buffer of rendered groups; each item picks a random
group from the buffer, draws m of its k images and augments them afresh; a group is replaced by a
newly rendered one after it has been served `reuse` times. Each rank (then each worker) walks its
own disjoint slice of the captions, and every rank yields the same number of items per epoch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from stablerep_pl.data.generators.base import ImageGenerator, caption_key
from stablerep_pl.data.sampling import check_views, choose_views


class ReuseBufferDataset(IterableDataset):
    """Items `{"images": [m, 3, S, S], "caption_ids", "caption"}`, each group served `reuse` times."""

    def __init__(
        self,
        captions: Sequence[str],
        generator: ImageGenerator,
        images_per_caption: int,
        views: int,
        transform: Callable,
        reuse: int = 4,
        buffer_size: int = 64,
        seed: int = 0,
        distinct_views: bool = True,
    ) -> None:
        check_views(images_per_caption, views, distinct_views)
        if reuse < 1 or buffer_size < 1:
            raise ValueError("reuse and buffer_size must be >= 1")
        self.captions = list(captions)
        self.generator, self.transform = generator, transform
        self.images_per_caption, self.views = images_per_caption, views
        self.reuse, self.buffer_size, self.seed = reuse, buffer_size, seed
        self.distinct_views = distinct_views
        self.rank, self.world_size, self.epoch = 0, 1, 0

    def set_distributed(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def captions_per_rank(self) -> int:
        return len(self.captions) // self.world_size

    def __len__(self) -> int:
        return self.captions_per_rank() * self.reuse

    def _my_indices(self) -> tuple[list[int], int]:
        """This worker's caption indices (a disjoint slice of this rank's) and its worker id.

        Each worker serves each of its captions exactly `reuse` times, so a rank yields exactly
        `captions_per_rank() * reuse` items whatever the number of workers.
        """
        order = list(range(len(self.captions)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        per_rank = self.captions_per_rank()
        mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return mine[worker::workers], worker

    def __iter__(self) -> Iterator[dict]:
        indices, worker = self._my_indices()
        self.epoch += 1
        rng = random.Random(f"{self.seed}-{self.rank}-{worker}-{self.epoch}")
        pending = iter(indices)
        buffer: list[list] = []  # [caption index, pictures, times served]

        def refill() -> None:
            while len(buffer) < self.buffer_size:
                index = next(pending, None)
                if index is None:
                    return
                text = self.captions[index]
                pictures = self.generator.generate([text], self.images_per_caption, [caption_key(text)])[0]
                buffer.append([index, pictures, 0])

        for _ in range(len(indices) * self.reuse):
            refill()
            slot = rng.randrange(len(buffer))
            index, pictures, served = buffer[slot]
            chosen = choose_views(len(pictures), self.views, self.distinct_views)
            images = torch.stack([self.transform(pictures[j]) for j in chosen])
            buffer[slot][2] = served + 1
            if served + 1 >= self.reuse:
                buffer.pop(slot)
            yield {"images": images, "caption_ids": torch.tensor(index), "caption": self.captions[index]}
