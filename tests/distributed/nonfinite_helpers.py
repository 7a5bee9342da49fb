"""For the non-finite loss tests: a loss that turns NaN on its k-th call (on one rank or all), and a
callback recording every rank's final state.

Imported by the single-process tests and, by class path, inside `stablerep fit` subprocesses
(tests/distributed is on their PYTHONPATH).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from stablerep_pl.losses import MultiPosConLoss


class NaNOnCall(nn.Module):
    """`MultiPosConLoss`, times NaN on call number `call` (1-based) on rank `rank` (None: every rank)."""

    def __init__(self, call: int, rank: int | None = None, temperature: float = 0.1) -> None:
        super().__init__()
        self.inner = MultiPosConLoss(temperature=temperature)
        self.call, self.rank, self.calls = call, rank, 0

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = self.inner(features, labels)
        this_rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if self.calls == self.call and self.rank in (None, this_rank):
            return loss * float("nan")  # still attached to the graph, like a real overflow
        return loss


class FinalState(L.Callback):
    """Every rank writes `rank{R}.pt`: its final weights and buffers (FSDP2 shards gathered in full),
    global step and skip count."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "global_step": trainer.global_step,
            "skipped_nonfinite_steps": pl_module.skipped_nonfinite_steps,
            "state": {k: full(v) for k, v in pl_module.state_dict().items()},
        }
        torch.save(record, self.out_dir / f"rank{trainer.global_rank}.pt")


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor, gathered when sharded (a collective: every rank calls it in the same order)."""
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()
