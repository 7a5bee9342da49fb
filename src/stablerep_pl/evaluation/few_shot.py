"""n-way k-shot evaluation on frozen features: nearest class mean after centring and L2 norm.

Episodes draw `ways` classes, `shots` support images per class from the train split and `queries`
query images per class from the test split. Features are centred on the train split's mean and
L2-normalised, and each query goes to the closest class mean ("SimpleShot", Wang et al. 2019): no
training, so thousands of episodes take seconds and the result depends only on the features and the
seed. The mean accuracy is reported with its 95 % confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class FewShotResult:
    ways: int
    shots: int
    episodes: int
    top1: float
    ci95: float


def few_shot_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> FewShotResult:
    """Mean top-1 (fraction) over `episodes` seeded n-way k-shot episodes."""
    if min(ways, shots, queries, episodes) < 1 or ways < 2:
        raise ValueError(
            f"need ways >= 2 and shots, queries, episodes >= 1; got {ways}, {shots}, {queries}, {episodes}"
        )
    mean = train_x.float().mean(0)
    train_n, test_n = F.normalize(train_x.float() - mean, dim=1), F.normalize(test_x.float() - mean, dim=1)
    by_class_train = {int(c): (train_y == c).nonzero().flatten() for c in train_y.unique()}
    by_class_test = {int(c): (test_y == c).nonzero().flatten() for c in test_y.unique()}
    eligible = [
        c for c in by_class_train
        if len(by_class_train[c]) >= shots and len(by_class_test.get(c, ())) >= queries
    ]  # fmt: skip
    if len(eligible) < ways:
        raise ValueError(
            f"{ways}-way {shots}-shot needs {ways} classes with >= {shots} train and >= {queries} test "
            f"images; only {len(eligible)} qualify"
        )
    generator = torch.Generator().manual_seed(seed)
    eligible_t = torch.tensor(eligible)
    accuracies = torch.empty(episodes)
    for episode in range(episodes):
        classes = eligible_t[torch.randperm(len(eligible_t), generator=generator)[:ways]].tolist()
        support, query = [], []
        for c in classes:
            pool_train, pool_test = by_class_train[c], by_class_test[c]
            support.append(train_n[pool_train[torch.randperm(len(pool_train), generator=generator)[:shots]]])
            query.append(test_n[pool_test[torch.randperm(len(pool_test), generator=generator)[:queries]]])
        prototypes = torch.stack([s.mean(0) for s in support])  # [ways, D]
        predictions = (torch.cat(query) @ F.normalize(prototypes, dim=1).T).argmax(1)
        truth = torch.arange(ways).repeat_interleave(queries)
        accuracies[episode] = (predictions == truth).float().mean()
    ci = 1.96 * float(accuracies.std(unbiased=True)) / math.sqrt(episodes) if episodes > 1 else 0.0
    return FewShotResult(ways, shots, episodes, float(accuracies.mean()), ci)
