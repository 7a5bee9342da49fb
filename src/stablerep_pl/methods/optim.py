"""Optimiser and schedule as published: AdamW without decay on biases/norms, per-step warmup + cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.optim import param_groups_weight_decay
from torch import nn


@dataclass
class OptimConfig:
    """AdamW + warmup/cosine settings (paper: betas (0.9, 0.98), weight decay 0.1, 0.5 warmup epochs).

    `lr` is the peak learning rate. When `base_lr` is set instead, the peak is
    `base_lr * global_batch_images / lr_reference_batch` (the paper's linear scaling rule).
    """

    lr: float | None = 1e-3
    base_lr: float | None = None
    lr_reference_batch: int = 256
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_epochs: float = 0.5
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if (self.lr is None) == (self.base_lr is None):
            raise ValueError("set exactly one of optim.lr (absolute) and optim.base_lr (scaled by batch)")
        if self.warmup_epochs < 0 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise ValueError("warmup must be >= 0")

    def peak_lr(self, global_batch_images: int | None) -> float:
        """The peak lr; `global_batch_images` may be unknown (None) only when `lr` is absolute."""
        if self.lr is not None:
            return self.lr
        assert self.base_lr is not None
        if global_batch_images is None:
            raise ValueError(
                "optim.base_lr is scaled by the global batch, which is unknown: set optim.lr instead"
            )
        return self.base_lr * global_batch_images / self.lr_reference_batch


def build_adamw(model: nn.Module, config: OptimConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over two groups: decayed weights, and 1-d parameters (biases, norms) without decay."""
    groups = param_groups_weight_decay(model, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=config.betas, eps=config.eps)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at `step`: linear ramp from 0 over warmup, then cosine to `min_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class ScheduleLength:
    """Optimizer steps of the whole run and of its warmup."""

    total_steps: int
    warmup_steps: int


class WarmupCosine:
    """`warmup_cosine_factor` as the multiplier of a `LambdaLR`, with lengths set by `resolve`.

    The lengths are known only once Lightning has set up the train loader (`BaseMethod.on_train_start`),
    after the scheduler is built; until then the factor is 0. A callable object rather than a closure
    because `LambdaLR` checkpoints such an object's attributes with its own state.

    Why not torch's `SequentialLR(LinearLR, CosineAnnealingLR)`: it expresses the ramp ((step+1)/W is
    `LinearLR(1/W, 1, W-1)`) but not the rest exactly: `CosineAnnealingLR` updates the lr recursively
    from the previous one (float drift over long runs), climbs back up after `T_max` instead of
    holding `min_ratio`, takes an absolute `eta_min` (not a ratio per parameter group), and W = 0 or 1
    needs special cases. timm's `CosineLRScheduler` ramps as step/W (lr 0 at step 0) and is not a
    torch scheduler. The closed form below is the schedule, at any step, also after a resume.
    """

    def __init__(self, min_ratio: float = 0.0) -> None:
        self.min_ratio = min_ratio
        self.warmup_steps = 0
        self.total_steps: int | None = None

    def resolve(self, length: ScheduleLength) -> None:
        self.warmup_steps, self.total_steps = length.warmup_steps, length.total_steps

    def __call__(self, step: int) -> float:
        if self.total_steps is None:
            return 0.0
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_ratio)


def optimizer_steps_per_epoch(batches_per_epoch: float, accumulate_grad_batches: int) -> int | None:
    """Optimizer steps in one epoch of `batches_per_epoch` batches (Lightning's `num_training_batches`:
    per rank, after `limit_train_batches`), None when the loader has no length (inf).

    Lightning steps after every `accumulate_grad_batches` batches and on an epoch's last batch.
    """
    if math.isinf(batches_per_epoch):
        return None
    return math.ceil(int(batches_per_epoch) / accumulate_grad_batches)


_EPOCH_LENGTH_HINT = (
    " (or give the data module an epoch length: a train dataset with __len__, or an int"
    " trainer.limit_train_batches)"
)


def resolve_schedule_length(
    config: OptimConfig, max_steps: int | None, max_epochs: int | None, steps_per_epoch: int | None
) -> ScheduleLength:
    """Total and warmup steps from the trainer's limits and the real epoch length; a clear error when
    either cannot be known (a schedule over an unknown length would be wrong from the first step).

    `max_steps` -1/None and `max_epochs` -1/None mean "no limit", as in Lightning. The total is the
    smaller of the two limits, the epoch limit counted in optimizer steps. Warmup: `warmup_steps`, or
    `warmup_epochs` × `steps_per_epoch` rounded to the nearest step (halves up); never above the total.
    """
    limits = []
    if max_steps is not None and max_steps >= 0:
        limits.append(max_steps)
    if max_epochs is not None and max_epochs >= 0 and steps_per_epoch is not None:
        limits.append(max_epochs * steps_per_epoch)
    if not limits:
        why = "the train dataloader has no length" if steps_per_epoch is None else "trainer.max_epochs is -1"
        raise ValueError(
            f"the number of training steps is unknown: {why} and trainer.max_steps is not set; set "
            f"trainer.max_steps{_EPOCH_LENGTH_HINT if steps_per_epoch is None else ''}"
        )
    total = min(limits)
    if total <= 0:
        raise ValueError(
            f"the schedule has no steps (trainer.max_steps={max_steps}, trainer.max_epochs={max_epochs}, "
            f"{steps_per_epoch} optimizer steps per epoch); set a positive trainer.max_steps or max_epochs"
        )
    if config.warmup_steps is not None:
        return ScheduleLength(total, min(config.warmup_steps, total))
    if config.warmup_epochs == 0:
        return ScheduleLength(total, 0)
    if steps_per_epoch is None:
        raise ValueError(
            f"optim.warmup_epochs={config.warmup_epochs} needs the number of steps per epoch, but the "
            f"train dataloader has no length; set optim.warmup_steps{_EPOCH_LENGTH_HINT}"
        )
    return ScheduleLength(total, min(total, math.floor(config.warmup_epochs * steps_per_epoch + 0.5)))
