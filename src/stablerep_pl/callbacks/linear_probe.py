"""Online evaluation on frozen features: linear probe and kNN, logged during training.

These are *online* numbers (quick probes on cached features at training resolution), not the
paper's offline protocol (`stablerep probe`). Both callbacks share the schedule (every N epochs, at
the end, and a random-init baseline at step 0), the feature extraction and the logging. Features are
encoded once per evaluation set and weights (a shared cache) and, under DDP, split across ranks and
gathered; rank 0 scores and logs, and every rank receives the same numbers.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from stablerep_pl.callbacks.feature_cache import SHARED_FEATURE_CACHE, Features, weights_version
from stablerep_pl.distributed.gather import world_info
from stablerep_pl.evaluation.eval_sets import EvalSet
from stablerep_pl.evaluation.features import broadcast_from_rank_zero, extract_features_distributed
from stablerep_pl.evaluation.knn import knn_accuracy
from stablerep_pl.evaluation.linear import (
    ONLINE_PROBE_LRS,
    ONLINE_PROBE_STEPS,
    ProbeResult,
    fit_linear_probe,
)


class FrozenFeatureCallback(L.Callback, abc.ABC):
    """Every `every_n_epochs` epochs and at the end of training, score frozen backbone features.

    With `baseline=True` the untrained backbone is scored once at the start of a fresh run (step 0),
    so the logs show what training added over random features. Scores are fractions in [0, 1],
    logged as percentages under `{kind}/{eval_set.name}/top1`.
    """

    kind = "eval"

    def __init__(
        self, eval_set: EvalSet, every_n_epochs: int = 1, batch_size: int = 256, baseline: bool = True
    ):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.eval_set, self.every_n_epochs, self.batch_size = eval_set, every_n_epochs, batch_size
        self.baseline = baseline
        self.baseline_result: ProbeResult | None = None
        self.last_result: ProbeResult | None = None
        self._last_probed_step = -1

    @property
    def prefix(self) -> str:
        return f"{self.kind}/{self.eval_set.name}"

    @abc.abstractmethod
    def score(
        self, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]
    ) -> ProbeResult:
        """Score cached `(features, labels)` of the train and test splits."""

    def probe(self, pl_module: L.LightningModule) -> ProbeResult:
        """Score `pl_module.backbone` in eval mode (BatchNorm uses running statistics).

        Under DDP each rank encodes its share of the evaluation set and the features are gathered;
        rank 0 fits the probe and broadcasts the result, so every rank holds the same metric.
        """
        backbone = pl_module.backbone
        was_training = backbone.training
        backbone.eval()
        # Forked RNG: evaluating (DataLoader seeds, probe init) must not change the training run.
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                train, test = self.features(backbone, pl_module.device)
                result = self.score(train, test) if world_info()[0] == 0 else None
        finally:
            backbone.train(was_training)
        return broadcast_from_rank_zero(result)

    def features(self, backbone: torch.nn.Module, device: torch.device) -> tuple[Features, Features]:
        """Train and test features of the evaluation set, shared with other callbacks via the cache."""
        token = backbone.__dict__.setdefault("_feature_cache_token", uuid.uuid4().hex)
        key = (self.eval_set.fingerprint(), id(backbone), token, weights_version(backbone))

        def compute() -> tuple[Features, Features]:
            kwargs: dict[str, Any] = {"device": device, "batch_size": self.batch_size}
            return (
                extract_features_distributed(backbone, self.eval_set.train_dataset(), **kwargs),
                extract_features_distributed(backbone, self.eval_set.test_dataset(), **kwargs),
            )

        return SHARED_FEATURE_CACHE.get_or_compute(key, compute)

    def _log(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.baseline or self.baseline_result is not None or trainer.global_step > 0:
            return
        self.baseline_result = self.probe(pl_module)
        self._log(trainer, {f"{self.prefix}/baseline_top1": 100 * self.baseline_result.top1})
        rank_zero_info(f"{self.prefix}: random-init backbone top-1 {100 * self.baseline_result.top1:.1f}%")

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = self.probe(pl_module)
        self.last_result, self._last_probed_step = result, trainer.global_step
        self._log(
            trainer, {f"{self.prefix}/top1": 100 * result.top1, f"{self.prefix}/best_lr": result.best_lr}
        )
        rank_zero_info(f"{self.prefix}: epoch {trainer.current_epoch} top-1 {100 * result.top1:.1f}%")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not trainer.sanity_checking:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_probed_step != trainer.global_step or self.last_result is None:
            self._run(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        # Plain containers only, so checkpoints load with torch.load(weights_only=True).
        def plain(result: ProbeResult | None) -> dict | None:
            return None if result is None else asdict(result)

        return {"baseline_result": plain(self.baseline_result), "last_result": plain(self.last_result)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        def restore(value: dict | None) -> ProbeResult | None:
            return None if value is None else ProbeResult(**value)

        self.baseline_result = restore(state_dict.get("baseline_result"))
        self.last_result = restore(state_dict.get("last_result"))


class LinearProbeCallback(FrozenFeatureCallback):
    """Full-batch linear probes on cached features, several learning rates at once; the best is logged."""

    kind = "probe"

    def __init__(
        self,
        eval_set: EvalSet,
        every_n_epochs: int = 1,
        lrs: Sequence[float] = ONLINE_PROBE_LRS,
        steps: int = ONLINE_PROBE_STEPS,
        batch_size: int = 256,
        baseline: bool = True,
    ) -> None:
        super().__init__(eval_set, every_n_epochs, batch_size, baseline)
        self.lrs, self.steps = tuple(lrs), steps

    def score(
        self, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]
    ) -> ProbeResult:
        return fit_linear_probe(*train, *test, self.eval_set.num_classes, lrs=self.lrs, steps=self.steps)


class KNNCallback(FrozenFeatureCallback):
    """Weighted kNN (cosine similarity, votes exp(sim / T)) on cached features."""

    kind = "knn"

    def __init__(
        self,
        eval_set: EvalSet,
        every_n_epochs: int = 1,
        k: int = 20,
        temperature: float = 0.07,
        batch_size: int = 256,
        baseline: bool = True,
    ) -> None:
        super().__init__(eval_set, every_n_epochs, batch_size, baseline)
        self.k, self.temperature = k, temperature

    def score(
        self, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]
    ) -> ProbeResult:
        top1 = knn_accuracy(*train, *test, self.eval_set.num_classes, self.k, self.temperature)
        return ProbeResult(top1=top1, best_lr=0.0, top1_per_lr={})
