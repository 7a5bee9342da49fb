"""A test-only callback for the queue runs in `stablerep fit` subprocesses (imported via PYTHONPATH).

Every rank writes `queue_rank{R}.pt`: the full parameters and buffers (FSDP2 shards gathered) at the
start and after every training batch, so that a test can check the momentum update step by step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from rank_recorder import full_state


class QueueRecorder(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.states.append(full_state(pl_module))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.states.append(full_state(pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.states, self.out_dir / f"queue_rank{trainer.global_rank}.pt")
