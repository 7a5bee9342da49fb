"""Serve every generated caption group several times, so slow generators do not starve training.

With Stable Diffusion on the fly, rendering k images of a caption costs far more than a training
step on them. `ReuseBufferDataset` renders a chunk of caption groups at once (up to `buffer_size`,
batched across captions) and serves the chunk in `reuse` rounds; each round is a fresh random order
of the chunk's groups, and every serve draws m of a group's k images and augments them afresh. A
chunk holds whole batches, so no batch ever holds the same caption twice. Each rank (then each
worker) walks its own disjoint share of the captions in whole batches, so every rank yields the
same number of items per epoch whatever the number of workers (at most batch_size − 1 captions per
rank sit out an epoch; the order, hence who sits out, changes every epoch).

Every draw is a function of (seed, rank, worker, epoch, position): the state after an item is the
epoch and the position, and a resumed run re-renders only the current chunk.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from stablerep_pl.captions.keys import caption_key
from stablerep_pl.data.sampling import check_views, choose_views
from stablerep_pl.distributed.item_seeds import derive_seed, seeded_draws
from stablerep_pl.generation.base import ImageGenerator


class ReuseBufferDataset(IterableDataset):
    """Items `{"images": [m, 3, S, S], "caption_ids", "caption", "draw_seed"}`, each group served
    `reuse` times per epoch, never twice within one batch of `batch_size` consecutive items."""

    def __init__(
        self,
        captions: Sequence[str],
        generator: ImageGenerator,
        images_per_caption: int,
        views: int,
        transform: Callable,
        reuse: int = 4,
        buffer_size: int = 64,
        batch_size: int = 1,
        seed: int = 0,
        distinct_views: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        check_views(images_per_caption, views, distinct_views)
        if reuse < 1 or batch_size < 1:
            raise ValueError(f"reuse and batch_size must be >= 1, got {reuse} and {batch_size}")
        if buffer_size < batch_size:
            raise ValueError(
                f"buffer_size ({buffer_size}) must hold at least one batch ({batch_size} captions), "
                "or batches would repeat captions"
            )
        if not captions:
            raise ValueError("no captions to train on (the caption list is empty or all blank)")
        self.captions = list(captions)
        self.generator, self.transform = generator, transform
        self.images_per_caption, self.views = images_per_caption, views
        self.reuse, self.batch_size, self.seed = reuse, batch_size, seed
        self.chunk_size = buffer_size // batch_size * batch_size
        self.distinct_views = distinct_views
        self.epoch = 0
        self._restore: dict[str, Any] | None = None
        self._state: dict[str, Any] = {}
        self.set_distributed(rank, world_size)

    def set_distributed(self, rank: int, world_size: int) -> None:
        if len(self.captions) // world_size < self.batch_size:
            raise ValueError(
                f"{len(self.captions)} captions cannot feed {world_size} ranks one batch of "
                f"{self.batch_size} captions each"
            )
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def captions_per_rank(self) -> int:
        """Captions a rank serves per epoch: its share, rounded down to whole batches."""
        return len(self.captions) // self.world_size // self.batch_size * self.batch_size

    def __len__(self) -> int:
        return self.captions_per_rank() * self.reuse

    def state_dict(self) -> dict[str, Any]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore = dict(state) if state else None

    def _my_groups(self, epoch: int, worker: int, workers: int) -> list[int]:
        """This worker's caption indices: whole batches of this rank's share of a per-epoch order."""
        order = list(range(len(self.captions)))
        random.Random(derive_seed("reuse-order", self.seed, epoch)).shuffle(order)
        per_rank = self.captions_per_rank()
        mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        blocks = [mine[i : i + self.batch_size] for i in range(0, per_rank, self.batch_size)]
        return [index for block in blocks[worker::workers] for index in block]

    def _serving_order(self, chunk: list[int], epoch: int, worker: int, number: int) -> list[int]:
        """`reuse` rounds, each a seeded permutation of the chunk (a multiple of the batch size)."""
        rng = random.Random(derive_seed("reuse-rounds", self.seed, self.rank, worker, epoch, number))
        order: list[int] = []
        for _ in range(self.reuse):
            round_ = list(chunk)
            rng.shuffle(round_)
            order.extend(round_)
        return order

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        restore, self._restore = self._restore, None
        epoch = int(restore["epoch"]) if restore else self.epoch
        start = int(restore["served"]) if restore else 0
        groups = self._my_groups(epoch, worker, workers)
        served = 0
        for number, first in enumerate(range(0, len(groups), self.chunk_size)):
            chunk = groups[first : first + self.chunk_size]
            if served + len(chunk) * self.reuse <= start:  # trained on before the requeue
                served += len(chunk) * self.reuse
                continue
            texts = [self.captions[i] for i in chunk]
            rendered = self.generator.generate(
                texts, self.images_per_caption, [caption_key(t) for t in texts]
            )
            pictures = dict(zip(chunk, rendered))
            for index in self._serving_order(chunk, epoch, worker, number):
                served += 1
                if served <= start:
                    continue
                draw_seed = derive_seed("reuse-item", self.seed, self.rank, worker, epoch, served)
                with seeded_draws(draw_seed):
                    chosen = choose_views(self.images_per_caption, self.views, self.distinct_views)
                    images = torch.stack([self.transform(pictures[index][j]) for j in chosen])
                self._state = {"epoch": epoch, "served": served}
                yield {
                    "images": images, "caption_ids": torch.tensor(index), "caption": self.captions[index],
                    "draw_seed": draw_seed,
                }  # fmt: skip
