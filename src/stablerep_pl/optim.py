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

    def peak_lr(self, global_batch_images: int) -> float:
        if self.lr is not None:
            return self.lr
        assert self.base_lr is not None
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


def resolve_warmup_steps(config: OptimConfig, total_steps: int, max_epochs: int | None) -> int:
    """Warmup in optimizer steps, from `warmup_steps` or from `warmup_epochs` and the epoch length."""
    if config.warmup_steps is not None:
        return min(config.warmup_steps, total_steps)
    if not max_epochs or max_epochs < 0:
        return 0
    return min(total_steps, round(config.warmup_epochs * total_steps / max_epochs))
