"""StableRep with a memory queue of past projections (and optionally a momentum encoder), for small batches.

Why: with one or two GPUs the global batch holds a few hundred images, far from the paper's 8256
candidates. `MultiPosQueueLoss` adds the last `queue_size` images of earlier steps, with their caption
ids, as candidates. Their projections come either from the online network, detached (`momentum:
null`, no extra compute, but entries go stale as the network moves), or from a momentum encoder, an
exponential moving average of backbone + head (MoCo), which keeps queue entries consistent with each
other at the cost of one more forward pass without gradient per step; the momentum keys then also
stand for the current batch as candidates, so the online projections are only anchors. Measured on
the quickstart (README, "Small batches: a memory queue"): without momentum the run learns nothing.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule

from stablerep_pl.losses.queue import MultiPosQueueLoss
from stablerep_pl.methods.base import views_first
from stablerep_pl.methods.stablerep import StableRep


class StableRepQueue(StableRep):
    """StableRep whose candidates are the global batch plus a FIFO queue of past images.

    Args:
        backbone, head_out_dim, temperature: as StableRep's; the other StableRep arguments
            (head_hidden_dim, head_layers, optim, nonfinite_loss, ...) pass through `kwargs`.
        queue_size: past images kept as candidates (0: none, the plain StableRep loss).
        momentum: m of the momentum encoder θ_k ← m·θ_k + (1 − m)·θ_q, applied after every optimizer
            step; None enqueues the online projections, detached, and keeps no second network.
        chunk_size: anchors per chunk in the loss (memory chunk × (batch + queue)).

    The momentum backbone and head are created here, as frozen copies of the online ones, so that
    checkpoints hold them and a resumed run continues from the same keys. They run in the module's
    mode (train: batch statistics, per view like the online head). Keys are computed for this rank's
    images; the loss gathers them, so every rank enqueues the same global batch. Validation and
    test use neither the queue nor the momentum encoder (see `MultiPosQueueLoss`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head_out_dim: int = 256,
        temperature: float = 0.1,
        queue_size: int = 4096,
        momentum: float | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if momentum is not None and (
            isinstance(momentum, bool) or not math.isfinite(momentum) or not 0.0 <= momentum <= 1.0
        ):
            raise ValueError(f"momentum must be None or a number in [0, 1], got {momentum!r}")
        if "loss" in kwargs:
            raise ValueError(
                "StableRepQueue builds its own MultiPosQueueLoss; set queue_size/temperature instead"
            )
        if momentum is None and queue_size > 0:
            warnings.warn(
                "StableRepQueue with momentum=None: queue entries are detached online projections of "
                "earlier steps; on the procedural quickstart such a run learnt nothing (README, 'Small "
                "batches: a memory queue'). Set momentum (e.g. 0.99) to train with a queue.",
                UserWarning,
                stacklevel=2,
            )
        queue = MultiPosQueueLoss(head_out_dim, queue_size, temperature, chunk_size=chunk_size)
        super().__init__(backbone, head_out_dim=head_out_dim, temperature=temperature, loss=queue, **kwargs)
        self.momentum = momentum
        self.momentum_backbone: nn.Module | None = None
        self.momentum_head: nn.Module | None = None
        if momentum is not None:
            self.momentum_backbone = frozen_copy(self.backbone)
            self.momentum_head = frozen_copy(self.head)
        self._momentum_due = False

    def configure_model(self) -> None:
        """When `BaseMethod` loads `init_weights` here (a start, not a resume), the momentum encoder
        starts from the loaded weights and the queue starts empty; a `--ckpt_path` resume restores both
        from its checkpoint afterwards."""
        loading = bool(self.init_weights) and self.init_weights_report is None
        super().configure_model()
        if loading and self.init_weights_report is not None:
            self.restart_momentum_and_queue()

    @torch.no_grad()
    def restart_momentum_and_queue(self) -> None:
        """Momentum encoder = online network (BatchNorm statistics too), queue empty: a fresh run."""
        if self.momentum_backbone is not None and self.momentum_head is not None:
            self.momentum_backbone.load_state_dict(self.backbone.state_dict())
            self.momentum_head.load_state_dict(self.head.state_dict())
        self.loss.queue_labels.fill_(-1)
        self.loss.queue_features.zero_()
        self.loss.queue_pointer.zero_()
        self.loss.queue_filled.zero_()

    def momentum_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(momentum, online) parameter pairs, in the order of the online backbone and head."""
        if self.momentum_backbone is None or self.momentum_head is None:
            return []
        pairs = list(zip(self.momentum_backbone.parameters(), self.backbone.parameters(), strict=True))
        return pairs + list(zip(self.momentum_head.parameters(), self.head.parameters(), strict=True))

    @torch.no_grad()
    def momentum_keys(self, images: torch.Tensor) -> torch.Tensor:
        """Momentum-encoder projections of `[n, m, C, H, W]`, view-major like `embed`."""
        assert self.momentum_backbone is not None and self.momentum_head is not None
        features = self.momentum_backbone(views_first(images))
        return self.momentum_head(features, num_views=images.shape[1])

    @torch.no_grad()
    def momentum_update(self) -> None:
        """θ_k ← m·θ_k + (1 − m)·θ_q for every parameter (BatchNorm statistics are the copy's own)."""
        assert self.momentum is not None
        for module in (self.momentum_backbone, self.momentum_head):
            # FSDP2: a root that ran a forward but no backward keeps its parameters gathered; shard
            # them again so that they pair with the online network's sharded ones.
            if isinstance(module, FSDPModule):
                module.reshard()
        for key, online in self.momentum_pairs():
            key.mul_(self.momentum).add_(online.detach(), alpha=1.0 - self.momentum)

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, caption_ids = batch["images"], batch["caption_ids"]
        out = self.embed(images)
        labels = caption_ids.repeat(images.shape[1])  # view-major, matches `views_first`
        keys = self.momentum_keys(images) if self.training and self.momentum is not None else None
        return {"loss": self.loss(out["projections"], labels, keys)}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """A step whose gradients the base class drops (non-finite loss, "skip") changes no weight,
        so the momentum encoder must not move either: it follows only steps that have gradients."""
        super().on_before_optimizer_step(optimizer)
        self._momentum_due = any(p.grad is not None for g in optimizer.param_groups for p in g["params"])

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The momentum update runs right after the optimizer step, before any callback's
        `on_train_batch_end` can write a checkpoint, so a checkpoint never holds a half-done step."""
        super().optimizer_step(*args, **kwargs)
        if self._momentum_due and self.momentum is not None:
            self.momentum_update()
        self._momentum_due = False


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy without gradients (and so outside the optimizer, whose groups skip them)."""
    clone = copy.deepcopy(module)
    clone.requires_grad_(False)
    return clone
