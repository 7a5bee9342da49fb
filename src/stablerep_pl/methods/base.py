"""Machinery shared by every method: optimiser groups, schedule, logging, feature extraction."""

from __future__ import annotations

import abc

import lightning as L
import torch
from torch import nn

from stablerep_pl.optim import (
    OptimConfig,
    build_adamw,
    resolve_warmup_steps,
    warmup_cosine_factor,
)
from stablerep_pl.parallel.fully_shard import shard_method
from stablerep_pl.parallel.seeding import decorrelate_ranks


def views_first(images: torch.Tensor) -> torch.Tensor:
    """`[n, m, C, H, W]` → view-major `[m * n, C, H, W]` (rows k·n … k·n+n−1 are view k)."""
    if images.ndim != 5:
        raise ValueError(f"expected images [n, m, C, H, W], got shape {tuple(images.shape)}")
    n, m = images.shape[:2]
    return images.transpose(0, 1).reshape(m * n, *images.shape[2:])


class BaseMethod(L.LightningModule, abc.ABC):
    """A backbone trained by a method-specific loss; subclasses implement `compute_losses`."""

    # Read by Lightning's ThroughputMonitor; set it to report MFU on accelerators.
    flops_per_batch: int | None = None

    def __init__(self, backbone: nn.Module, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.optim = optim or OptimConfig()
        self.feature_dim = infer_feature_dim(backbone)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features `[B, D]`: what the probes and exported models use."""
        return self.backbone(images)

    @abc.abstractmethod
    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named losses of one batch; the key `loss` is optimised."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        batch_size = int(batch["caption_ids"].shape[0])
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items()},
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,  # under DDP/FSDP the loss of the global batch (mean over ranks), not rank 0's
        )
        return losses["loss"]

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
        """Record how to rebuild a timm backbone, so `stablerep export` needs only the checkpoint."""
        name, kwargs = getattr(self.backbone, "name", None), getattr(self.backbone, "timm_kwargs", None)
        if name is not None and kwargs is not None:
            checkpoint["timm_backbone"] = {"name": name, "kwargs": dict(kwargs)}

    def setup(self, stage: str) -> None:
        """Every rank draws its own augmentations in-process (see `parallel/seeding.py`)."""
        decorrelate_ranks(self.trainer.global_rank, self.trainer.world_size)

    def configure_model(self) -> None:
        """Under ModelParallelStrategy (`configs/trainer/fully_shard.yaml`) shard with FSDP2; else nothing."""
        if self.device_mesh is not None:
            shard_method(self, self.device_mesh["data_parallel"])

    def data_parallel_size(self) -> int:
        """Ranks that each see their own batch: the sampler's replicas (DDP, FSDP, FSDP2), 1 alone."""
        kwargs = getattr(self.trainer.strategy, "distributed_sampler_kwargs", None) or {}
        return int(kwargs.get("num_replicas", self.trainer.world_size))

    def global_batch_images(self) -> int:
        """Images per optimiser step across all ranks, read from the data module."""
        dm = getattr(self.trainer, "datamodule", None)
        per_rank = getattr(dm, "images_per_batch", None)
        if per_rank is None:
            return 256
        accumulate = self.trainer.accumulate_grad_batches
        return int(per_rank) * self.data_parallel_size() * accumulate

    def describe_batch_and_lr(self, global_images: int, peak_lr: float) -> str:
        """One line for the start of a run: where the global batch and the peak lr come from."""
        dm = getattr(self.trainer, "datamodule", None)
        per_rank = getattr(dm, "images_per_batch", None)
        ranks, accumulate = self.data_parallel_size(), self.trainer.accumulate_grad_batches
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

    def configure_optimizers(self):
        global_images = self.global_batch_images()
        peak_lr = self.optim.peak_lr(global_images)
        optimizer = build_adamw(self, self.optim, peak_lr)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = resolve_warmup_steps(self.optim, total, self.trainer.max_epochs)
        self.print(f"{self.describe_batch_and_lr(global_images, peak_lr)} · {total} steps ({warmup} warmup)")
        if self.logger is not None:
            self.logger.log_hyperparams(
                {
                    "global_batch_images": global_images,
                    "peak_lr": peak_lr,
                    "total_steps": total,
                    "warmup_steps": warmup,
                }
            )

        def factor(step: int) -> float:
            return warmup_cosine_factor(step, warmup, total, self.optim.min_lr_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def infer_feature_dim(backbone: nn.Module) -> int:
    """Feature width from `num_features` (timm) or `feature_dim`; fails clearly otherwise."""
    for attr in ("num_features", "feature_dim"):
        value = getattr(backbone, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"{type(backbone).__name__} has no integer `num_features`/`feature_dim`; "
        "wrap it in stablerep_pl.models.TimmBackbone or set the attribute"
    )
