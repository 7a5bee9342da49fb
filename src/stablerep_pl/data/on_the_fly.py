"""Train on images generated on the fly: each item is m augmented images of one caption.

Every caption owns a fixed pool of k images (image j of caption i is always the same picture,
as with pre-rendered shards); each time the caption is drawn, m of the k are chosen without
replacement and augmented independently. Caption ids are dataset indices, so under the
rank-aware `EpochSampler` they are unique across ranks. The choice and the augmentation of an
item draw from a seed of (run seed, epoch, index) only, so batches are reproducible and a resumed
run sees exactly the pixels the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from stablerep_pl.augment.modes import AugmentationMode, AugmentationModeMixin
from stablerep_pl.augment.transforms import AugmentationConfig
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key, normalize_caption
from stablerep_pl.data.collate import CaptionBatchCollate
from stablerep_pl.data.loader import ResumableDataLoader
from stablerep_pl.data.reuse_buffer import ReuseBufferDataset
from stablerep_pl.data.samplers import EpochSampler
from stablerep_pl.data.sampling import check_views, choose_views
from stablerep_pl.distributed.item_seeds import default_data_seed, derive_seed, seeded_draws
from stablerep_pl.generation.base import ImageGenerator, ImageRequest


def unique_captions(captions: Sequence[str]) -> list[str]:
    """Normalised captions without empty ones and repeats, first occurrences kept (a repeat would be
    a false negative)."""
    seen: set[str] = set()
    kept = []
    for caption in captions:
        text = normalize_caption(caption)
        if text and text not in seen:
            seen.add(text)
            kept.append(text)
    return kept


class CaptionGroupDataset(Dataset):
    """Item `(epoch, i)` (or plain `i`, epoch 0): `{"images": [m, 3, S, S], "caption_ids": i,
    "caption": text, "draw_seed"}`; its draws come from `seed`, the epoch and i only."""

    def __init__(
        self,
        captions: Sequence[str],
        generator: ImageGenerator,
        images_per_caption: int,
        views: int,
        transform: Callable,
        distinct_views: bool = True,
        seed: int = 0,
    ) -> None:
        check_views(images_per_caption, views, distinct_views)
        if not captions:
            raise ValueError("no captions to train on (the caption list is empty or all blank)")
        self.captions = list(captions)
        self.keys = [caption_key(c) for c in self.captions]
        self.generator = generator
        self.images_per_caption = images_per_caption
        self.views = views
        self.transform = transform
        self.distinct_views = distinct_views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        draw_seed = derive_seed("caption-group", self.seed, epoch, index)
        caption, caption_key_ = self.captions[index], self.keys[index]
        with seeded_draws(draw_seed):
            chosen = choose_views(self.images_per_caption, self.views, self.distinct_views)
            pictures = self.generator.render([ImageRequest(caption, caption_key_, j) for j in chosen])
            images = torch.stack([self.transform(p) for p in pictures])
        return {
            "images": images, "caption_ids": torch.tensor(index, dtype=torch.long), "caption": caption,
            "draw_seed": draw_seed,
        }  # fmt: skip


class GeneratorDataModule(AugmentationModeMixin, L.LightningDataModule):
    """Batches `images [n, m, 3, S, S]`, `caption_ids [n]`, `caption` (list of n strings).

    `batch_size` counts captions per device; each step sees `batch_size * views` images per device.
    Captions come from `captions` or, when absent, from the embedded procedural grammar (each
    attribute besides the object named with probability `caption_p_attribute`).
    With `reuse > 1` (for slow generators such as Stable Diffusion) a buffer of `buffer_size`
    rendered caption groups serves each group `reuse` times (see `reuse_buffer.py`). A CUDA
    generator cannot run in forked workers: use `num_workers: 0` (generation in the training
    process) or `multiprocessing_context: spawn`. `text_tokens: 77` adds CLIP `tokens [n, 77]`
    (StableRep+). `distinct_views: false` augments one image per caption m times (SimCLR).
    `augmentation_mode`: `per_image` (default), `batched` or `on_device` (with a GPU generator in
    the training process it keeps the CPU free), see `augment/modes.py`. The default is the
    reference pipeline; `batched` (the quickstart's choice) draws from the same distribution with
    40 % less CPU per image, which matters where the worker shares cores with the model.
    """

    def __init__(
        self,
        generator: ImageGenerator,
        captions: list[str] | None = None,
        num_captions: int = 2048,
        caption_seed: int = 0,
        caption_p_attribute: float = 0.6,
        images_per_caption: int = 10,
        views: int = 6,
        batch_size: int = 32,
        augmentation: AugmentationConfig | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        reuse: int = 1,
        buffer_size: int = 64,
        multiprocessing_context: str | None = None,
        val_captions: int = 0,
        text_tokens: int | None = None,
        distinct_views: bool = True,
        augmentation_mode: AugmentationMode = "per_image",
        seed: int | None = None,
        stall_timeout: float | None = 600.0,
    ) -> None:
        super().__init__()
        self.init_augmentation(augmentation, augmentation_mode)
        self.generator = generator
        self.captions = captions
        self.num_captions = num_captions
        self.caption_seed = caption_seed
        self.caption_p_attribute = caption_p_attribute
        self.images_per_caption = images_per_caption
        self.views = views
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.reuse, self.buffer_size = reuse, buffer_size
        self.multiprocessing_context = multiprocessing_context
        self.val_captions = val_captions
        self.collate = CaptionBatchCollate(text_tokens, self.collate_augmentation())
        self.distinct_views = distinct_views
        self.seed, self.stall_timeout = seed, stall_timeout
        self.rank, self.world_size = 0, 1
        self.train_dataset: CaptionGroupDataset | ReuseBufferDataset | None = None
        self.val_dataset: CaptionGroupDataset | None = None
        self._training_captions: list[str] | None = None

    @property
    def images_per_batch(self) -> int:
        return self.batch_size * self.views

    def training_captions(self) -> list[str]:
        """The deduplicated training captions: given ones, or the procedural grammar's (built once)."""
        if self._training_captions is None:
            source = self.captions
            if source is None:
                source = procedural_captions(
                    self.num_captions, seed=self.caption_seed, p_attribute=self.caption_p_attribute
                )
            self._training_captions = unique_captions(source)
        return self._training_captions

    def data_seed(self) -> int:
        return default_data_seed() if self.seed is None else self.seed

    def generated_pool(self, batch: dict[str, Any], row: int, count: int) -> list[torch.Tensor]:
        """The first `count` of the k images caption `row` of `batch` owns, un-augmented (uint8
        `[3, H, W]`), rendered again: the batch does not record which m of the k its views show."""
        caption = batch["caption"][row]
        indices = range(min(count, self.images_per_caption))
        pictures = self.generator.render([ImageRequest(caption, caption_key(caption), j) for j in indices])
        return [pil_to_tensor(p.convert("RGB")) for p in pictures]

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        if self.val_captions > 0 and self.val_dataset is None:
            self.val_dataset = self._held_out_dataset()
        if self.train_dataset is not None:
            return
        captions = self.training_captions()
        if not captions:
            raise ValueError("no captions to train on (the caption list is empty or all blank)")
        if len(captions) // self.world_size < self.batch_size:
            raise ValueError(
                f"{len(captions)} distinct captions cannot fill one batch of {self.batch_size} captions "
                f"on each of {self.world_size} ranks"
            )
        args = (captions, self.generator, self.images_per_caption, self.views, self.view_transform())
        if self.reuse > 1:
            self.train_dataset = ReuseBufferDataset(
                *args,
                reuse=self.reuse,
                buffer_size=self.buffer_size,
                batch_size=self.batch_size,
                seed=self.data_seed(),
                distinct_views=self.distinct_views,
                rank=self.rank,
                world_size=self.world_size,
            )
        else:
            self.train_dataset = CaptionGroupDataset(*args, self.distinct_views, seed=self.data_seed())

    def _held_out_dataset(self) -> CaptionGroupDataset:
        """Captions drawn from another seed and not in the training list, for validate/test losses."""
        train = set(self.training_captions())
        pool = procedural_captions(
            self.val_captions + len(train),
            seed=self.caption_seed + 7919,
            p_attribute=self.caption_p_attribute,
        )
        held_out = [c for c in pool if c not in train][: self.val_captions]
        return CaptionGroupDataset(
            held_out, self.generator, self.images_per_caption, self.views, self.view_transform(),
            seed=self.data_seed(),
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            fitting = self.trainer is not None and self.trainer.state.fn == "fit"
            if fitting:
                return []  # no held-out captions: fit without a validation loop
            raise ValueError("set data.init_args.val_captions > 0 to validate or test on held-out captions")
        return DataLoader(self.val_dataset, batch_size=self.batch_size, shuffle=False, drop_last=False,
                          num_workers=self.num_workers, collate_fn=self.collate)  # fmt: skip

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()

    def _trainer_epoch(self) -> int | None:
        return None if self.trainer is None else int(self.trainer.current_epoch)

    def train_dataloader(self) -> ResumableDataLoader:
        assert self.train_dataset is not None, "call setup() first"
        workers = self.num_workers > 0
        common: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "multiprocessing_context": self.multiprocessing_context if workers else None,
            "collate_fn": self.collate,
            "epoch_source": self._trainer_epoch,
            "stall_timeout": self.stall_timeout,
            "stall_hint": f"Generating with {type(self.generator).__name__}.",
        }
        if isinstance(self.train_dataset, ReuseBufferDataset):
            # Fresh workers every epoch take the epoch from this process's copy of the dataset.
            return ResumableDataLoader(
                self.train_dataset, batch_size=self.batch_size, drop_last=True, **common
            )
        sampler = EpochSampler(
            self.train_dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True,
            seed=self.data_seed(), drop_last=True,
        )  # fmt: skip
        return ResumableDataLoader(
            self.train_dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
            persistent_workers=workers, **common,
        )  # fmt: skip
