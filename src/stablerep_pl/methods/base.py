"""Machinery shared by every method: optimiser groups, schedule, logging, feature extraction."""

from __future__ import annotations

import abc
import warnings
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from stablerep_pl.distributed.fully_shard import shard_method
from stablerep_pl.distributed.seeding import decorrelate_ranks
from stablerep_pl.methods.init_weights import load_init_weights
from stablerep_pl.methods.optim import (
    OptimConfig,
    WarmupCosine,
    build_adamw,
    optimizer_steps_per_epoch,
    resolve_schedule_length,
)
from stablerep_pl.methods.shapes import infer_feature_dim, views_first  # noqa: F401 (views_first re-exported)
from stablerep_pl.methods.step_stats import (
    NonFiniteLossError,
    StepStats,
    nonfinite_message,
    reduce_step_stats,
)

# The training metrics are logged already reduced over ranks (one all-reduce a step, see
# `step_stats.py`), so Lightning's advice to add sync_dist=True to them does not apply.
warnings.filterwarnings(
    "ignore", message=r"It is recommended to use `self\.log\('(train|data)/", category=PossibleUserWarning
)


class BaseMethod(L.LightningModule, abc.ABC):
    """A backbone trained by a method-specific loss; subclasses implement `compute_losses`.

    `nonfinite_loss`: on a NaN/inf loss, "stop" raises `NonFiniteLossError` before the step changes
    any weight (so the next checkpoint cannot overwrite good weights with NaNs); "skip" drops the
    optimizer step (with gradient accumulation: the whole accumulated step), so that it changes no
    parameter or optimizer state, restores the BatchNorm statistics the bad batch changed, and counts
    it; the lr schedule still advances. All ranks decide alike. Subclasses overriding
    `on_train_start`, `on_after_backward`, `on_before_optimizer_step` or `configure_model` call super.

    `init_weights`: a file to start from (not a resume: fresh optimiser and schedule), ours (.ckpt),
    the authors' (.pth) or an export (.safetensors); a partial match is an error listing the missing
    and unexpected weights unless `init_weights_strict` is false (see `init_weights.py`).
    """

    # Read by Lightning's ThroughputMonitor; set it to report MFU on accelerators.
    flops_per_batch: int | None = None

    def __init__(
        self,
        backbone: nn.Module,
        optim: OptimConfig | None = None,
        nonfinite_loss: Literal["stop", "skip"] = "stop",
        init_weights: str | None = None,
        init_weights_strict: bool = True,
    ) -> None:
        super().__init__()
        if nonfinite_loss not in ("stop", "skip"):
            raise ValueError(f"nonfinite_loss must be 'stop' or 'skip', got {nonfinite_loss!r}")
        self.backbone = backbone
        self.optim = optim or OptimConfig()
        self.nonfinite_loss = nonfinite_loss
        self.init_weights, self.init_weights_strict = init_weights, init_weights_strict
        self.init_weights_report: Any = None  # what `configure_model` loaded (once per process)
        self.feature_dim = infer_feature_dim(backbone)
        # Run totals (identical on every rank, kept in checkpoints) for logs and the end-of-run summary.
        self.skipped_nonfinite_steps = 0
        self.skipped_samples = 0  # samples the data pipeline skipped (corrupt), summed over ranks
        self._lr_schedule: WarmupCosine | None = None
        self._batch_and_lr = ""
        self._hparams_to_log: dict[str, float] = {}
        self._drop_next_update = False
        self._buffers_to_restore: list[torch.Tensor] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features `[B, D]`: what the probes and exported models use."""
        return self.backbone(images)

    @abc.abstractmethod
    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named losses of one batch; the key `loss` is optimised."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The loss of one batch. Its logged values, the non-finite decision and the data pipeline's
        skip count come from one all-reduce, identical on every rank (`step_stats.py`)."""
        if self._lr_schedule is not None and self._lr_schedule.total_steps is None:
            raise RuntimeError(f"{type(self).__name__}.on_train_start must call super().on_train_start()")
        # The forward updates buffers (BatchNorm statistics; NaN when the activations are): a
        # skipped step puts them back, so that it leaves the model exactly as it was.
        buffers = [b.detach().clone() for b in self.buffers()] if self.nonfinite_loss == "skip" else []
        losses = self.compute_losses(batch)
        batch_size = int(batch["caption_ids"].shape[0])
        replicas = max(1, self.trainer.world_size // self.data_parallel_size())
        stats = reduce_step_stats(losses, batch.get("skipped"), data_replicas=replicas)
        self.skipped_samples += stats.skipped_samples
        if stats.skips_reported or self.skipped_samples:
            total = float(self.skipped_samples)
            self.log("data/skipped_samples", total, on_step=True, on_epoch=False, batch_size=batch_size)
        if stats.nonfinite_ranks:
            return self._nonfinite_step(stats, losses["loss"], buffers, batch_size)
        if self.nonfinite_loss == "skip":
            self._log_skipped_steps(batch_size)
        # Already the mean over ranks (what sync_dist=True logged), so no further sync. With equal
        # batch sizes on all ranks the epoch mean is also the same as sync_dist=True's.
        metrics = {f"train/{k}": v for k, v in stats.means.items()}
        self.log_dict(
            metrics, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size, sync_dist=False
        )
        return losses["loss"]

    def _nonfinite_step(
        self, stats: StepStats, loss: torch.Tensor, buffers: list[torch.Tensor], batch_size: int
    ) -> torch.Tensor:
        """Stop the run, or mark the coming optimizer step to be dropped (once, even if several
        accumulated batches are bad) and return a loss whose backward every rank can run."""
        if self.nonfinite_loss == "stop":
            raise NonFiniteLossError(nonfinite_message(stats, self.trainer.global_step, self.current_epoch))
        if not self._drop_next_update:
            self._drop_next_update = True
            self.skipped_nonfinite_steps += 1
        self._log_skipped_steps(batch_size)
        self._buffers_to_restore = buffers  # after backward: autograd saved some of them
        # Lightning refuses a None loss when world size > 1, and every rank must run the same
        # backward anyway (DDP/FSDP2 collectives): a zero loss on the same graph, whose gradients
        # `on_before_optimizer_step` drops, so that the optimizer step changes nothing.
        return torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0

    def _log_skipped_steps(self, batch_size: int) -> None:
        count = float(self.skipped_nonfinite_steps)
        self.log("train/skipped_nonfinite_steps", count, on_step=True, on_epoch=False, batch_size=batch_size)

    def on_after_backward(self) -> None:
        """Put back the buffers a skipped batch's forward changed (subclasses: call super)."""
        if self._buffers_to_restore is not None:
            with torch.no_grad():
                for buffer, saved in zip(self.buffers(), self._buffers_to_restore):
                    buffer.copy_(saved)
            self._buffers_to_restore = None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the gradients of a skipped step (AdamW leaves parameters without one untouched).

        Subclasses overriding this hook must call `super().on_before_optimizer_step(optimizer)`.
        """
        if self._drop_next_update:
            optimizer.zero_grad(set_to_none=True)
            self._drop_next_update = False

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        losses = self.compute_losses(batch)
        batch_size = int(batch["caption_ids"].shape[0])
        metrics = {f"{stage}/{k}": v.detach() for k, v in losses.items()}
        self.log_dict(metrics, on_epoch=True, batch_size=batch_size, sync_dist=True)
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The training objective on held-out captions (BatchNorm in eval mode)."""
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record how to rebuild a timm backbone, so `stablerep export` needs only the checkpoint; the
        global batch and peak lr (for model cards); the run totals of skips, to stay totals on resume."""
        name, kwargs = getattr(self.backbone, "name", None), getattr(self.backbone, "timm_kwargs", None)
        if name is not None and kwargs is not None:
            checkpoint["timm_backbone"] = {"name": name, "kwargs": dict(kwargs)}
        checkpoint["batch_and_lr"] = dict(self._hparams_to_log)
        checkpoint["skip_counts"] = {
            "skipped_nonfinite_steps": self.skipped_nonfinite_steps,
            "skipped_samples": self.skipped_samples,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counts = checkpoint.get("skip_counts", {})
        self.skipped_nonfinite_steps = int(counts.get("skipped_nonfinite_steps", 0))
        self.skipped_samples = int(counts.get("skipped_samples", 0))

    def setup(self, stage: str) -> None:
        """Every rank draws its own augmentations in-process (see `parallel/seeding.py`)."""
        decorrelate_ranks(self.trainer.global_rank, self.trainer.world_size)

    def configure_model(self) -> None:
        """Load `init_weights` once per process, before DDP/FSDP wrap the model (a `--ckpt_path` resume
        restores its own weights after this); under ModelParallelStrategy then shard with FSDP2."""
        if self.init_weights and self.init_weights_report is None:
            self.init_weights_report = load_init_weights(self, self.init_weights, self.init_weights_strict)
        if self.device_mesh is not None:
            shard_method(self, self.device_mesh["data_parallel"])

    def data_parallel_size(self) -> int:
        """Ranks that each see their own batch: the sampler's replicas (DDP, FSDP, FSDP2), 1 alone."""
        kwargs = getattr(self.trainer.strategy, "distributed_sampler_kwargs", None) or {}
        return int(kwargs.get("num_replicas", self.trainer.world_size))

    def _images_per_rank(self) -> tuple[Any, int | None]:
        """The data module and its `images_per_batch` (images per rank per step), None if it has none."""
        dm = getattr(self.trainer, "datamodule", None)
        per_rank = getattr(dm, "images_per_batch", None)
        return dm, None if per_rank is None else int(per_rank)

    def global_batch_images(self) -> int | None:
        """Images per optimiser step across all ranks, from the data module's `images_per_batch`.

        None when the data module does not say: fine for an absolute `optim.lr`, an error for
        `optim.base_lr`, which would otherwise be scaled by a made-up batch.
        """
        dm, per_rank = self._images_per_rank()
        if per_rank is None:
            if self.optim.base_lr is not None:
                raise ValueError(
                    f"optim.base_lr is scaled by the global batch, but the data module "
                    f"({type(dm).__name__ if dm is not None else 'none: dataloaders passed directly'}) "
                    "has no `images_per_batch`; add an `images_per_batch` attribute or property (images "
                    "per rank per step) to it, or set an absolute optim.lr"
                )
            return None
        accumulate = self.trainer.accumulate_grad_batches
        return int(per_rank) * self.data_parallel_size() * accumulate

    def describe_batch_and_lr(self, global_images: int | None, peak_lr: float) -> str:
        """One line for the start of a run: where the global batch and the peak lr come from."""
        _, per_rank = self._images_per_rank()
        ranks, accumulate = self.data_parallel_size(), self.trainer.accumulate_grad_batches
        if global_images is None:
            batch = "global batch unknown (the data module has no `images_per_batch`)"
        else:
            batch = f"global batch {global_images} images/step"
        if per_rank is not None:
            batch += f" = {per_rank} per rank × {ranks} ranks × {accumulate} accumulated"
        if self.optim.base_lr is not None:
            lr = (
                f"peak lr {peak_lr:.4g} = base_lr {self.optim.base_lr:.4g} × {global_images} / "
                f"{self.optim.lr_reference_batch}"
            )
        else:
            lr = f"peak lr {peak_lr:.4g} (optim.lr, not scaled with the batch)"
        return f"{batch} · {lr}"

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW at the peak lr and a per-step warmup + cosine whose length `on_train_start` sets."""
        global_images = self.global_batch_images()
        peak_lr = self.optim.peak_lr(global_images)
        optimizer = build_adamw(self, self.optim, peak_lr)
        self._lr_schedule = WarmupCosine(self.optim.min_lr_ratio)
        self._batch_and_lr = self.describe_batch_and_lr(global_images, peak_lr)
        self._hparams_to_log = {"peak_lr": peak_lr}
        if global_images is not None:
            self._hparams_to_log["global_batch_images"] = global_images
        if self.logger is not None:  # now, before Lightning writes hparams.yaml (once, before training)
            self.logger.log_hyperparams(self._hparams_to_log)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        """Size the schedule from the real epoch length, before the first step.

        Only now is `trainer.num_training_batches` known for every way of running (with `max_steps`
        alone Lightning does not set up the loader before this). Setting it up earlier ourselves, as
        `trainer.estimated_stepping_batches` does, would drop a resumable loader's restored state
        (Lightning issue #20550): the loader must be first set up after the checkpoint is restored.
        """
        if self._lr_schedule is None:  # a subclass with its own configure_optimizers
            return
        trainer = self.trainer
        steps_per_epoch = optimizer_steps_per_epoch(
            trainer.num_training_batches, trainer.accumulate_grad_batches
        )
        length = resolve_schedule_length(self.optim, trainer.max_steps, trainer.max_epochs, steps_per_epoch)
        self._lr_schedule.resolve(length)
        for config in trainer.lr_scheduler_configs:  # the lr of the coming step (a resumed one too)
            scheduler = config.scheduler
            if self._lr_schedule in getattr(scheduler, "lr_lambdas", ()):
                for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                    group["lr"] = base_lr * self._lr_schedule(scheduler.last_epoch)
                scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
        total, warmup = length.total_steps, length.warmup_steps
        per_epoch = "" if steps_per_epoch is None else f", {steps_per_epoch} per epoch"
        self.print(f"{self._batch_and_lr} · {total} steps ({warmup} warmup{per_epoch})")
        if self.logger is not None:  # in the logger's hparams (TensorBoard), too late for hparams.yaml
            self.logger.log_hyperparams(self._hparams_to_log | {"total_steps": total, "warmup_steps": warmup})
