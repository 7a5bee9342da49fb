"""A test-only callback run inside the 2-process `stablerep fit` subprocesses (imported via PYTHONPATH).

Every rank writes `rank{R}.pt` with what the tests compare against a single process: the initial
weights, the first global batch's share of this rank, the first step's local and logged losses and
the gradients the optimiser sees (after DDP's all-reduce or FSDP2's reduce-scatter), the caption ids
of every step, the learning rate, and the final weights and buffers. Sharded parameters (FSDP2
DTensors) are recorded in full, so ranks and strategies compare tensor for tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor, gathered when sharded (a collective: every rank calls it in the same order)."""
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {name: full(p) for name, p in module.named_parameters()}
    return state | {name: full(b) for name, b in module.named_buffers()}


class RankRecorder(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict[str, Any] = {
            "caption_ids": [],
            "local_loss": [],
            "logged_loss": [],
            "rng_after_batch": [],
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record |= {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "node_rank": trainer.node_rank,
            "num_nodes": trainer.num_nodes,
            "strategy": type(trainer.strategy).__name__,
            "initial_state": full_state(pl_module),
            "initial_lr": trainer.optimizers[0].param_groups[0]["initial_lr"],
            "global_batch_images": pl_module.global_batch_images(),
            "batchnorm_types": sorted(
                {type(m).__name__ for m in pl_module.modules() if "BatchNorm" in type(m).__name__}
            ),
            "fsdp_modules": sorted(n for n, m in pl_module.named_modules() if isinstance(m, FSDPModule)),
        }

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.record["caption_ids"].append(batch["caption_ids"].clone())
        self.record["rng_after_batch"].append(
            torch.get_rng_state()
        )  # what the in-process augmentation drew from
        if trainer.global_step == 0:
            self.record["first_batch"] = {
                k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor) and v.ndim > 0
            }

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        if trainer.global_step == 0:
            self.record["first_grads"] = {
                n: full(p.grad) for n, p in pl_module.named_parameters() if p.grad is not None
            }

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.record["local_loss"].append(float(outputs["loss"]))
        self.record["logged_loss"].append(float(trainer.callback_metrics["train/loss_step"]))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["final_state"] = full_state(pl_module)
        self.record["global_step"] = trainer.global_step
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.out_dir / f"rank{trainer.global_rank}.pt")
