"""Where the training augmentation runs: one choice shared by the training data modules.

The distribution is the same in all three modes (see `batch_augment.py`):
- `batched` (`ShardDataModule`'s default): workers crop and flip each view (`crop_transform`),
  then the collate colour-jitters, greys, blurs and normalises the whole batch in vectorised
  passes (`BatchAugmentation`): about a third of the CPU time per view of the per-image pipeline.
- `on_device`: workers only decode, crop and flip; uint8 batches (4× smaller) travel to the
  accelerator and the photometric half runs there in `on_after_batch_transfer`. For GPU nodes
  short of CPU cores, and for generating on the fly in the training process (`num_workers: 0`).
  Outside a Trainer the loaders then yield uint8 views.
- `per_image` (`GeneratorDataModule`'s default; the quickstart sets `batched`): torchvision's
  `train_transform` on each view (the reference pipeline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from stablerep_pl.augment.batch_augment import BatchAugmentation
from stablerep_pl.augment.transforms import AugmentationConfig, crop_transform, train_transform
from stablerep_pl.distributed.item_seeds import seeded_draws

AugmentationMode = Literal["batched", "on_device", "per_image"]


class AugmentationModeMixin:
    """For LightningDataModules: per-view transform, batch stage and the after-transfer hook."""

    augmentation: AugmentationConfig
    augmentation_mode: AugmentationMode
    batch_augmentation: BatchAugmentation
    trainer: Any

    def init_augmentation(self, augmentation: AugmentationConfig | None, mode: AugmentationMode) -> None:
        if mode not in get_args(AugmentationMode):
            raise ValueError(f"augmentation_mode must be one of {get_args(AugmentationMode)}, got {mode!r}")
        self.augmentation = augmentation or AugmentationConfig()
        self.augmentation_mode = mode
        self.batch_augmentation = BatchAugmentation(self.augmentation)

    def view_transform(self) -> Callable:
        """Per-view work in the workers: the whole recipe, or its crop and flip (uint8 out)."""
        if self.augmentation_mode == "per_image":
            return train_transform(self.augmentation)
        return crop_transform(self.augmentation)

    def collate_augmentation(self) -> BatchAugmentation | None:
        """What the collate runs on each batch's views (`batched` mode only)."""
        return self.batch_augmentation if self.augmentation_mode == "batched" else None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """`on_device` mode: augment the uint8 views where the batch now lives."""
        if self.augmentation_mode != "on_device" or not isinstance(batch, dict):
            return batch
        images = batch["images"]
        augment = self.batch_augmentation.to(images.device)
        if "augment_seed" in batch:  # the batch's own draws (see collate.py), whatever ran before
            with seeded_draws(int(batch["augment_seed"])):
                batch["images"] = augment(images)
        else:
            batch["images"] = augment(images)
        if self.trainer is not None:  # e.g. bf16-true: inputs follow the weights' dtype
            batch = self.trainer.precision_plugin.convert_input(batch)
        return batch
