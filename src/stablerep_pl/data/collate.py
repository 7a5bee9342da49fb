"""Batch collation shared by the data modules: default collate, batched augmentation, CLIP tokens."""

from __future__ import annotations

from typing import Any

from torch.utils.data import default_collate

from stablerep_pl.data.batch_augment import BatchAugmentation
from stablerep_pl.models.text import CaptionTokenizer


class CaptionBatchCollate:
    """`default_collate`; then, when given, the batch's photometric augmentation on `images` and
    `tokens [n, context_length]` from the `caption` strings.

    Runs in the DataLoader workers, so neither blocks the training step.
    """

    def __init__(self, text_tokens: int | None = None, augmentation: BatchAugmentation | None = None) -> None:
        self.tokenizer = CaptionTokenizer(text_tokens) if text_tokens else None
        self.augmentation = augmentation

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = default_collate(items)
        if self.augmentation is not None:
            batch["images"] = self.augmentation(batch["images"])
        if self.tokenizer is not None:
            batch["tokens"] = self.tokenizer(list(batch["caption"]))
        return batch
