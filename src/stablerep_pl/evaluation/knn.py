"""Weighted k-nearest-neighbour classification on frozen features (cosine similarity).

The vote of each of the k nearest training features is exp(similarity / T), summed per class, as
common in self-supervised evaluation (Wu et al. 2018; DINO uses k = 20, T = 0.07).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_accuracy


@torch.no_grad()
def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores `[N_test, num_classes]` from the k most similar training features."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    if train_x.shape[1] != test_x.shape[1] or len(train_x) != len(train_y):
        raise ValueError("train/test feature widths or train labels do not match")
    k = min(k, len(train_x))
    train_n, test_n = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    scores = []
    for start in range(0, len(test_n), chunk_size):
        sims, idx = (test_n[start : start + chunk_size] @ train_n.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), num_classes, dtype=sims.dtype)
        votes.scatter_add_(1, train_y[idx], (sims / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    num_classes: int, k: int = 20, temperature: float = 0.07,
) -> float:  # fmt: skip
    """Top-1 of the weighted kNN classifier, a fraction in [0, 1]."""
    scores = knn_predict(train_x, train_y, test_x, num_classes, k, temperature)
    return float(multiclass_accuracy(scores, test_y, num_classes, average="micro"))
