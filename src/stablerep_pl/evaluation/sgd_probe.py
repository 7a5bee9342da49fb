"""The paper's linear probe: SGD (momentum 0.9, no weight decay, cosine) with several lrs at once.

All learning rates are trained in the same pass: every batch of frozen features goes through one
BatchNorm without affine parameters (it has nothing to learn, so the heads can share it) and then
through one linear head per learning rate, each in its own optimiser parameter group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_accuracy
from tqdm.auto import tqdm

from stablerep_pl.evaluation.linear import ProbeResult
from stablerep_pl.methods.optim import warmup_cosine_factor

FeatureBatches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]


class ParallelLinearHeads(nn.Module):
    """`num_heads` linear classifiers over shared, optionally BatchNorm-normalised features."""

    def __init__(
        self, dim: int, num_classes: int, num_heads: int, batch_norm: bool = True, seed: int = 0
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False) if batch_norm else nn.Identity()
        generator = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList(
            [
                nn.Parameter(0.01 * torch.randn(dim, num_classes, generator=generator))
                for _ in range(num_heads)
            ]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(1, num_classes)) for _ in range(num_heads)])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits `[num_heads, N, num_classes]`."""
        x = self.norm(features.float())
        weights, biases = torch.stack(list(self.weights)), torch.stack(list(self.biases))
        return torch.baddbmm(biases, x.expand(len(self.weights), -1, -1), weights)


def train_sgd_probe(
    batches: FeatureBatches,
    dim: int,
    num_classes: int,
    lrs: Sequence[float],
    epochs: int,
    steps_per_epoch: int,
    batch_norm: bool = True,
    momentum: float = 0.9,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> ParallelLinearHeads:
    """Train one head per lr on `batches(epoch)` (frozen `(features, labels)`), cosine over all steps."""
    if epochs < 1 or steps_per_epoch < 1 or not lrs:
        raise ValueError(
            f"need epochs >= 1, steps_per_epoch >= 1 and some lrs; got {epochs}, {steps_per_epoch}, {lrs}"
        )
    heads = ParallelLinearHeads(dim, num_classes, len(lrs), batch_norm, seed).to(device)
    groups = [{"params": [w, b], "lr": lr} for w, b, lr in zip(heads.weights, heads.biases, lrs)]
    optimizer = torch.optim.SGD(groups, momentum=momentum, weight_decay=0.0)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, 0, total))
    heads.train()
    for epoch in tqdm(range(epochs), desc="linear probe (SGD)", disable=not progress, leave=False):
        for features, labels in batches(epoch):
            if batch_norm and len(features) < 2:  # BatchNorm cannot normalise a single sample
                continue
            logits = heads(features.to(device))
            targets = labels.to(device).expand(len(lrs), -1).reshape(-1)
            # Sum over heads: each head's gradient is its own mean cross-entropy gradient.
            loss = F.cross_entropy(logits.reshape(-1, num_classes), targets) * len(lrs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return heads.eval()


@torch.no_grad()
def score_heads(
    heads: ParallelLinearHeads,
    lrs: Sequence[float],
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
) -> ProbeResult:
    """Top-1 of every head on `features`; the best lr's score is the result."""
    device = next(heads.parameters()).device
    logits = heads.eval()(features.to(device)).cpu()
    scores = {
        float(lr): float(multiclass_accuracy(logits[h], labels, num_classes, average="micro"))
        for h, lr in enumerate(lrs)
    }
    best = max(scores, key=scores.__getitem__)
    return ProbeResult(top1=scores[best], best_lr=best, top1_per_lr=scores)


def cached_batches(
    features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0
) -> tuple[FeatureBatches, int]:
    """Shuffled minibatches of cached features (a fresh, seeded order every epoch), and their count."""

    def batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield features[index], labels[index]

    return batches, math.ceil(len(features) / batch_size)
