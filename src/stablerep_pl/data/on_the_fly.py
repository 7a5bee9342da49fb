"""Train on images generated on the fly: each item is m augmented images of one caption.

Every caption owns a fixed pool of k images (image j of caption i is always the same picture,
as with pre-rendered shards); each time the caption is drawn, m of the k are chosen without
replacement and augmented independently. Caption ids are dataset indices, so under a
DistributedSampler they are unique across ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from stablerep_pl.data.augmentation_modes import AugmentationMode, AugmentationModeMixin
from stablerep_pl.data.captions import procedural_captions
from stablerep_pl.data.collate import CaptionBatchCollate
from stablerep_pl.data.generators.base import ImageGenerator, ImageRequest, caption_key
from stablerep_pl.data.reuse_buffer import ReuseBufferDataset
from stablerep_pl.data.sampling import check_views, choose_views
from stablerep_pl.data.transforms import AugmentationConfig


def unique_captions(captions: Sequence[str]) -> list[str]:
    """Drop empty and repeated captions, keeping first occurrences (repeats would be false negatives)."""
    seen: set[str] = set()
    kept = []
    for caption in captions:
        text = caption.strip()
        if text and text not in seen:
            seen.add(text)
            kept.append(text)
    return kept


class CaptionGroupDataset(Dataset):
    """Item i: `{"images": [m, 3, S, S], "caption_ids": i, "caption": text}`."""

    def __init__(
        self,
        captions: Sequence[str],
        generator: ImageGenerator,
        images_per_caption: int,
        views: int,
        transform: Callable,
        distinct_views: bool = True,
    ) -> None:
        check_views(images_per_caption, views, distinct_views)
        if not captions:
            raise ValueError("no captions to train on")
        self.captions = list(captions)
        self.keys = [caption_key(c) for c in self.captions]
        self.generator = generator
        self.images_per_caption = images_per_caption
        self.views = views
        self.transform = transform
        self.distinct_views = distinct_views

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict:
        # The worker's torch RNG is seeded per rank, worker and epoch by Lightning, so the choice of
        # views and the augmentations are reproducible and differ between epochs.
        chosen = choose_views(self.images_per_caption, self.views, self.distinct_views)
        caption, key = self.captions[index], self.keys[index]
        pictures = self.generator.render([ImageRequest(caption, key, j) for j in chosen])
        images = torch.stack([self.transform(p) for p in pictures])
        return {"images": images, "caption_ids": torch.tensor(index, dtype=torch.long), "caption": caption}


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
    the training process it keeps the CPU free), see `augmentation_modes.py`. The default differs
    from `ShardDataModule` because here generation, not augmentation, bounds the input rate: the
    quickstart took 5 min 33 s with `batched` and 4 min 59 s with `per_image` (within this
    machine's run-to-run spread), and its documented numbers were measured with `per_image`.
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

    def setup(self, stage: str | None = None) -> None:
        if self.val_captions > 0 and self.val_dataset is None:
            self.val_dataset = self._held_out_dataset()
        if self.train_dataset is not None:
            return
        args = (self.training_captions(), self.generator, self.images_per_caption, self.views)
        transform = self.view_transform()
        if self.reuse > 1:
            dataset = ReuseBufferDataset(
                *args,
                transform,
                reuse=self.reuse,
                buffer_size=self.buffer_size,
                distinct_views=self.distinct_views,
            )
            if self.trainer is not None:
                dataset.set_distributed(self.trainer.global_rank, self.trainer.world_size)
            self.train_dataset = dataset
        else:
            self.train_dataset = CaptionGroupDataset(*args, transform, self.distinct_views)

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
            held_out, self.generator, self.images_per_caption, self.views, self.view_transform()
        )

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

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None, "call setup() first"
        iterable = isinstance(self.train_dataset, ReuseBufferDataset)
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            shuffle=not iterable,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,  # the reuse buffer advances its epoch per worker
            pin_memory=self.pin_memory,
            multiprocessing_context=self.multiprocessing_context if self.num_workers > 0 else None,
            collate_fn=self.collate,
        )
