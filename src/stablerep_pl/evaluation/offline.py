"""The offline evaluation protocol behind `stablerep probe`: reported numbers come from here.

Linear probe as in the paper: frozen backbone in eval mode, its pooled features (the class token
after the final norm for ViTs), BatchNorm without affine parameters, SGD momentum 0.9 without weight
decay, cosine schedule, a learning-rate sweep trained in one pass, RandomResizedCrop + flip on the
train split and resize + centre crop on the test split. `cache_features` trades the augmentation for
speed: features are computed once (evaluation transform) and the sweep runs on the cache.

Alongside: weighted kNN, n-way k-shot episodes, and the online callbacks' quick estimator, which
reproduces the numbers logged during training from the checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from stablerep_pl.augment.transforms import probe_train_transform
from stablerep_pl.evaluation.eval_sets import EvalSet
from stablerep_pl.evaluation.features import extract_features
from stablerep_pl.evaluation.few_shot import few_shot_accuracy
from stablerep_pl.evaluation.knn import knn_accuracy
from stablerep_pl.evaluation.linear import ONLINE_PROBE_LRS, ONLINE_PROBE_STEPS, fit_linear_probe
from stablerep_pl.evaluation.sgd_probe import cached_batches, score_heads, train_sgd_probe


@dataclass
class ProbeProtocol:
    """Settings of `stablerep probe`. Defaults are the paper's ImageNet protocol (90 epochs)."""

    lrs: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0])
    epochs: int = 90
    batch_size: int = 256
    batch_norm: bool = True
    cache_features: bool = False
    min_scale: float = 0.08
    num_workers: int = 4
    seed: int = 0
    knn_k: int = 20
    knn_temperature: float = 0.07
    online_estimator: bool = True
    online_lrs: list[float] = field(default_factory=lambda: list(ONLINE_PROBE_LRS))
    online_steps: int = ONLINE_PROBE_STEPS
    few_shot_ways: int = 5
    few_shot_shots: list[int] = field(default_factory=lambda: [1, 5])
    few_shot_queries: int = 15
    few_shot_episodes: int = 600

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lrs or min(self.lrs) <= 0:
            raise ValueError("need epochs >= 1, batch_size >= 1 and positive lrs")


def run_protocol(
    backbone: nn.Module,
    eval_set: EvalSet,
    protocol: ProbeProtocol,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every evaluation of `protocol` on `eval_set`; values are fractions in [0, 1].

    Seeded from `protocol.seed` on a forked RNG, so calling it leaves the caller's RNG untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(protocol.seed)
        return _run_protocol(backbone, eval_set, protocol, device, progress)


def _run_protocol(
    backbone: nn.Module,
    eval_set: EvalSet,
    protocol: ProbeProtocol,
    device: torch.device | str,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    backbone = backbone.to(device).eval()
    extract = {"device": device, "batch_size": protocol.batch_size, "num_workers": protocol.num_workers}
    name = eval_set.name if progress else None
    train = extract_features(backbone, eval_set.train_dataset(), progress=name and f"{name} train", **extract)
    test = extract_features(backbone, eval_set.test_dataset(), progress=name and f"{name} test", **extract)
    classes = eval_set.num_classes
    results: dict[str, dict[str, Any]] = {}

    if protocol.cache_features:
        batches, steps = cached_batches(*train, protocol.batch_size, protocol.seed)
    else:
        batches, steps = augmented_batches(backbone, eval_set, protocol, device)
    heads = train_sgd_probe(
        batches, train[0].shape[1], classes, protocol.lrs, protocol.epochs, steps,
        protocol.batch_norm, seed=protocol.seed, device=device, progress=progress,
    )  # fmt: skip
    linear = score_heads(heads, protocol.lrs, *test, classes)
    results["linear"] = {**asdict(linear), "augmented": not protocol.cache_features}
    if protocol.knn_k > 0:
        top1 = knn_accuracy(*train, *test, classes, protocol.knn_k, protocol.knn_temperature)
        results["knn"] = {"top1": top1, "k": protocol.knn_k, "temperature": protocol.knn_temperature}
    if protocol.online_estimator:
        quick = fit_linear_probe(*train, *test, classes, lrs=protocol.online_lrs, steps=protocol.online_steps)
        results["online_linear"] = asdict(quick)
    if protocol.few_shot_episodes > 0 and classes >= protocol.few_shot_ways:
        for shots in protocol.few_shot_shots:
            few = few_shot_accuracy(
                *train, *test, protocol.few_shot_ways, shots, protocol.few_shot_queries,
                protocol.few_shot_episodes, protocol.seed,
            )  # fmt: skip
            results[f"few_shot_{few.ways}way_{few.shots}shot"] = asdict(few)
    return results


def augmented_batches(
    backbone: nn.Module, eval_set: EvalSet, protocol: ProbeProtocol, device: torch.device | str
) -> tuple[Any, int]:
    """Per epoch, the train split through RandomResizedCrop + flip and the frozen backbone."""
    dataset = eval_set.train_dataset(probe_train_transform(eval_set.image_size, protocol.min_scale))

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(protocol.seed * 100_003 + epoch)
        loader = DataLoader(
            dataset, batch_size=protocol.batch_size, shuffle=True, generator=generator,
            num_workers=protocol.num_workers, persistent_workers=False,
        )  # fmt: skip
        for images, labels in loader:
            with torch.no_grad():  # never yield inside no_grad: the grad mode would leak to the caller
                features = backbone(images.to(device, non_blocking=True)).float()
            yield features, torch.as_tensor(labels)

    return batches, len(DataLoader(dataset, batch_size=protocol.batch_size))
