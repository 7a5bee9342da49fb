"""StableRep: images of one caption are positives of each other (SimCLR/SupCon by configuration)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from stablerep_pl.losses import MultiPosConLoss
from stablerep_pl.methods.base import BaseMethod, views_first
from stablerep_pl.methods.optim import OptimConfig
from stablerep_pl.models.heads import ProjectionHead


class StableRep(BaseMethod):
    """Backbone → per-view projection head → multi-positive contrastive loss over all n·m images.

    With one caption per image and m = 2 augmented views the same module is SimCLR; with class
    labels as `caption_ids` it is SupCon. `loss` may be any module called as `loss(features, labels)`.
    `init_weights` starts a run from the weights of another file (see `BaseMethod`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head_hidden_dim: int = 4096,
        head_out_dim: int = 256,
        head_layers: int = 3,
        temperature: float = 0.1,
        loss: nn.Module | None = None,
        optim: OptimConfig | None = None,
        nonfinite_loss: Literal["stop", "skip"] = "stop",
        init_weights: str | None = None,
        init_weights_strict: bool = True,
    ) -> None:
        super().__init__(backbone, optim, nonfinite_loss, init_weights, init_weights_strict)
        self.head = ProjectionHead(self.feature_dim, head_hidden_dim, head_out_dim, head_layers)
        self.loss = loss if loss is not None else MultiPosConLoss(temperature=temperature)

    def embed(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named outputs for a batch `[n, m, C, H, W]`: backbone features and projections, view-major."""
        num_views = images.shape[1]
        features = self.backbone(views_first(images))
        return {"features": features, "projections": self.head(features, num_views=num_views)}

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, caption_ids = batch["images"], batch["caption_ids"]
        out = self.embed(images)
        labels = caption_ids.repeat(images.shape[1])  # view-major, matches `views_first`
        return {"loss": self.loss(out["projections"], labels)}

    def loss_settings(self) -> dict[str, float | None]:
        """The loss settings a checkpoint records (what `stablerep export --format authors` writes as
        their `ssl_temp`, `ssl_w1`, `ssl_w2`)."""
        temperature = getattr(self.loss, "temperature", None)
        return {"temperature": None if temperature is None else float(temperature)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["loss_settings"] = self.loss_settings()
