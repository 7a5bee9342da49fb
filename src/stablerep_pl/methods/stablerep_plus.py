"""StableRep+: StableRep plus an image-text multi-positive loss against the caption (language supervision)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from stablerep_pl.losses import MultiPosImageTextLoss
from stablerep_pl.methods.base import infer_feature_dim, views_first
from stablerep_pl.methods.optim import OptimConfig
from stablerep_pl.methods.stablerep import StableRep
from stablerep_pl.models.heads import ProjectionHead

MAX_LOGIT_SCALE = math.log(100.0)


def projection(in_dim: int, out_dim: int, kind: str, hidden_dim: int = 4096) -> nn.Module:
    """Into the shared image-text space, as the authors' `vl_projection`: "linear" (paper) is their
    matrix P applied as `x @ P` (an `nn.Linear` without bias whose weight is Pᵀ); "mlp" is their MLP,
    Linear-BN-ReLU-Linear-BN-ReLU-Linear (a `ProjectionHead`; images go through it once per view)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return ProjectionHead(in_dim, hidden_dim, out_dim, num_layers=3)
    raise ValueError(f"projection must be 'linear' or 'mlp', got {kind!r}")


def project(module: nn.Module, features: torch.Tensor, num_views: int = 1) -> torch.Tensor:
    """`module(features)`; an MLP projection normalises each view's block of rows on its own."""
    if isinstance(module, ProjectionHead):
        return module(features, num_views=num_views)
    return module(features)


class StableRepPlus(StableRep):
    """Total = `image_loss_weight` · L_image (StableRep) + `image_text_weight` · (L_i→t + L_t→i) / 2.

    The weights are the authors' `ssl_w1` and `ssl_w2` (their loss is `w1·img + w2·(L_v + L_t)/2`,
    both 1 by default: the paper's L_image + 0.5·(L_i→t + L_t→i)). Every image's target is its own
    caption and every caption's target is uniform over its m images. Logits are
    `exp(logit_scale) · image·textᵀ`, `logit_scale` learnable, initialised to log(1/0.07) and kept in
    [0, log 100] as theirs. Batches need `tokens [n, L]` (data modules produce them with
    `text_tokens: 77`). The authors' text tower uses `activation: quick_gelu`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        text_encoder: nn.Module,
        embed_dim: int = 512,
        image_text_weight: float = 1.0,
        image_loss_weight: float = 1.0,
        projection_type: str = "linear",
        init_logit_scale: float = math.log(1 / 0.07),
        image_text_loss: nn.Module | None = None,
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
        super().__init__(
            backbone, head_hidden_dim, head_out_dim, head_layers, temperature, loss, optim, nonfinite_loss,
            init_weights, init_weights_strict,
        )  # fmt: skip
        self.text_encoder = text_encoder
        text_dim = infer_feature_dim(text_encoder)
        self.image_projection = projection(self.feature_dim, embed_dim, projection_type, head_hidden_dim)
        self.text_projection = projection(text_dim, embed_dim, projection_type, head_hidden_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.image_text_weight, self.image_loss_weight = image_text_weight, image_loss_weight
        self.image_text_loss = image_text_loss if image_text_loss is not None else MultiPosImageTextLoss()
        if not image_loss_weight:  # CLIP: no image-image loss, so no head (DDP needs every parameter used)
            self.head = None

    def scale(self) -> torch.Tensor:
        """The multiplier exp(logit_scale), in [1, 100]."""
        return self.logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "tokens" not in batch:
            raise KeyError("StableRepPlus needs batch['tokens']: set data.init_args.text_tokens: 77")
        images, caption_ids = batch["images"], batch["caption_ids"]
        labels = caption_ids.repeat(images.shape[1])  # view-major, as `embed`
        # image_loss_weight 0 with one view per caption is CLIP (the paper's CLIP baseline).
        if self.image_loss_weight:
            out = self.embed(images)
            image_loss = self.loss(out["projections"], labels)
        else:
            out, image_loss = {"features": self.backbone(views_first(images))}, images.new_zeros(())
        image_embed = project(self.image_projection, out["features"], num_views=images.shape[1])
        text_embed = project(self.text_projection, self.text_encoder(batch["tokens"]))
        scale = self.scale()
        image_text = self.image_text_loss(image_embed, text_embed, labels, caption_ids, scale)
        return {
            "loss": self.image_loss_weight * image_loss + self.image_text_weight * image_text,
            "image_loss": image_loss.detach(),
            "image_text_loss": image_text.detach(),
            "logit_scale": scale.detach(),
        }

    def loss_settings(self) -> dict[str, float | None]:
        weights = {
            "image_loss_weight": float(self.image_loss_weight),
            "image_text_weight": float(self.image_text_weight),
        }
        return {**super().loss_settings(), **weights}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # keep the parameter itself in range after each step, as the authors do
            self.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
