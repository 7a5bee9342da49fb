"""What a requeued run needs beyond Lightning's own checkpoint, in one callback `stablerep fit` always adds.

- Every rank's random state (torch, CUDA, NumPy, Python): Lightning saves none, so after a requeue
  stochastic layers (drop path, dropout) and anything else drawing in the training process drew
  other numbers than the uninterrupted run. States are gathered from all ranks when a checkpoint is
  dumped (rank 0 writes it) and each rank restores its own just before its first resumed batch,
  after everything the restart itself runs (setup, sanity checks, iterator construction).
- Atomic checkpoint files (`AtomicCheckpointIO`) for strategies that save single files.
- Writable output directories, checked before the first step instead of at the first checkpoint.

The data order is restored by the data modules' loaders (`data/loader.py`).
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.plugins.io import TorchCheckpointIO

from stablerep_pl.callbacks.checkpoint_io import AtomicCheckpointIO
from stablerep_pl.callbacks.output_dirs import check_output_dirs


def plain_rng_states() -> dict[str, Any]:
    """This process's RNG states as tensors and tuples only (checkpoints stay `weights_only`-loadable)."""
    states = _collect_rng_states(include_cuda=torch.cuda.is_available())
    kind, keys, position, has_gauss, cached = states["numpy"]
    states["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached)
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    states = dict(states)
    kind, keys, position, has_gauss, cached = states["numpy"]
    states["numpy"] = (kind, keys.numpy().astype(np.uint32), position, has_gauss, cached)
    if not torch.cuda.is_available():
        states.pop("torch.cuda", None)
    _set_rng_states(states)


class ExactResume(L.Callback):
    """Per-rank RNG states in checkpoints, atomic checkpoint files, output directories checked early."""

    def __init__(self, atomic_checkpoints: bool = True, check_outputs: bool = True) -> None:
        self.atomic_checkpoints, self.check_outputs = atomic_checkpoints, check_outputs
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.check_outputs:
            check_output_dirs(trainer)
        strategy = trainer.strategy
        if self.atomic_checkpoints and type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()

    def state_dict(self) -> dict[str, Any]:
        own = plain_rng_states()
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return {"rng": [own]}
        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, own)  # every rank dumps the checkpoint; rank 0 writes it
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("rng") or []
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if len(states) != world:
            warnings.warn(
                f"the checkpoint holds RNG states of {len(states)} ranks, this run has {world}: "
                "random draws in the training process will differ from the uninterrupted run",
                stacklevel=2,
            )
            return
        self._pending = states[rank]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None
