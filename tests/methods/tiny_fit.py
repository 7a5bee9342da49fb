"""A tiny StableRep, sized and unsized data and a recorder, for Trainer-level tests of BaseMethod."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from stablerep_pl.methods import StableRep


class TinyBackbone(nn.Module):
    """Flatten → Linear: a backbone with `num_features` that trains in milliseconds."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, self.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_model(**kwargs: Any) -> StableRep:
    torch.manual_seed(0)
    return StableRep(TinyBackbone(), head_hidden_dim=8, head_out_dim=4, head_layers=2, **kwargs)


def item(i: int) -> dict[str, torch.Tensor]:
    """Caption i: 2 views of a 4 px image."""
    g = torch.Generator().manual_seed(i)
    return {"images": torch.randn(2, 3, 4, 4, generator=g), "caption_ids": torch.tensor(i)}


class Items(Dataset):
    """A sized dataset of `n` captions."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return item(i)


class Stream(IterableDataset):
    """`n` captions without `__len__`: Lightning cannot know the epoch length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return (item(i) for i in range(self.n))


class Recorder(L.Callback):
    """The lr each optimizer step uses, and the weights after each step (by global step)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights[trainer.global_step] = snapshot(pl_module)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.weights[trainer.global_step] = snapshot(pl_module)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def trainer(callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    return L.Trainer(callbacks=callbacks, **(defaults | kwargs))
