"""Linear probes on cached frozen features, several learning rates trained side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torchmetrics.functional.classification import multiclass_accuracy

# The online estimator's settings: the callbacks and `stablerep probe`'s reproduction of them share these.
ONLINE_PROBE_LRS: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
ONLINE_PROBE_STEPS = 300


@dataclass
class ProbeResult:
    """Best top-1 (fraction in [0, 1]) over the learning-rate sweep, and every lr's score."""

    top1: float
    best_lr: float
    top1_per_lr: dict[float, float] = field(default_factory=dict)


def fit_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float] = ONLINE_PROBE_LRS,
    steps: int = ONLINE_PROBE_STEPS,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> ProbeResult:
    """Full-batch AdamW probes (one per lr, trained in one pass) on standardised features.

    Standardising with the train split's statistics is BatchNorm without affine parameters in eval
    mode, as in the paper's probe; the best lr's top-1 on the test split is reported.
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"feature shapes differ: {tuple(train_x.shape)} vs {tuple(test_x.shape)}")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("features and labels have different lengths")
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    dim, heads = train_x.shape[1], len(lrs)
    weights = [
        torch.nn.Parameter(torch.randn(dim, num_classes, generator=generator) / math.sqrt(dim)) for _ in lrs
    ]
    biases = [torch.nn.Parameter(torch.zeros(1, num_classes)) for _ in lrs]
    optimizer = torch.optim.AdamW(
        [{"params": [w, b], "lr": lr, "weight_decay": weight_decay} for w, b, lr in zip(weights, biases, lrs)]
    )

    def all_logits(x: torch.Tensor) -> torch.Tensor:  # [heads, N, classes]
        return torch.baddbmm(torch.stack(biases), x.expand(heads, -1, -1), torch.stack(weights))

    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    targets = train_y.expand(heads, -1).reshape(-1)
    with torch.enable_grad():
        for _ in range(steps):
            logits = all_logits(train_x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, num_classes), targets) * heads
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    with torch.no_grad():
        logits = all_logits(test_x)
        scores = {
            float(lr): float(multiclass_accuracy(logits[h], test_y, num_classes, average="micro"))
            for h, lr in enumerate(lrs)
        }
    best_lr = max(scores, key=scores.__getitem__)
    return ProbeResult(top1=scores[best_lr], best_lr=best_lr, top1_per_lr=scores)
