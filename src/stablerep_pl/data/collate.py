"""Batch collation shared by the data modules: default collate, batched augmentation, CLIP tokens."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate

from stablerep_pl.augment.batch_augment import BatchAugmentation
from stablerep_pl.captions.tokenize import CaptionTokenizer
from stablerep_pl.distributed.item_seeds import derive_seed, seeded_draws


class CaptionBatchCollate:
    """`default_collate`; then, when given, the batch's photometric augmentation on `images` and
    `tokens [n, context_length]` from the `caption` strings.

    Items may carry their `draw_seed` (see `item_seeds.py`): the batch then gets `augment_seed`, a
    seed derived from its items' seeds, and the batch augmentation draws from it, here or (mode
    `on_device`) after the transfer, so a batch's pixels never depend on a worker's RNG state.
    Runs in the DataLoader workers, so neither blocks the training step.
    """

    def __init__(self, text_tokens: int | None = None, augmentation: BatchAugmentation | None = None) -> None:
        self.tokenizer = CaptionTokenizer(text_tokens) if text_tokens else None
        self.augmentation = augmentation

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        seeds = [item.pop("draw_seed") for item in items if "draw_seed" in item]
        batch = default_collate(items)
        if seeds:
            batch["augment_seed"] = torch.tensor(derive_seed("batch", *seeds))
        if self.augmentation is not None:
            if seeds:
                with seeded_draws(int(batch["augment_seed"])):
                    batch["images"] = self.augmentation(batch["images"])
            else:
                batch["images"] = self.augmentation(batch["images"])
        if self.tokenizer is not None:
            batch["tokens"] = self.tokenizer(list(batch["caption"]))
        return batch
