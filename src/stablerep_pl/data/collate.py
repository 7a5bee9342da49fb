"""Batch collation shared by the data modules: default collate, plus CLIP tokens for StableRep+."""

from __future__ import annotations

from typing import Any

from torch.utils.data import default_collate

from stablerep_pl.models.text import CaptionTokenizer


class CaptionBatchCollate:
    """`default_collate`, then `tokens [n, context_length]` from the `caption` strings when asked.

    Runs in the DataLoader workers, so tokenisation never blocks the training step.
    """

    def __init__(self, text_tokens: int | None = None) -> None:
        self.tokenizer = CaptionTokenizer(text_tokens) if text_tokens else None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = default_collate(items)
        if self.tokenizer is not None:
            batch["tokens"] = self.tokenizer(list(batch["caption"]))
        return batch
