"""StableRep's multi-positive contrastive loss, and SupCon / SimCLR (NT-Xent) as special cases.

For an anchor a (ℓ2-normalised) the candidates are all other images of the *global* batch; the loss is
H(p, q) with q = softmax_j(a·b_j / τ) and p uniform over the candidates sharing a's label. An anchor
without positives contributes 0 and still counts in the mean. Each rank returns the mean over its own
anchors, so DDP's gradient averaging yields the global mean when ranks hold equally many anchors.
With unequal local sizes, weight rank r's loss by n_r · world / N to get exactly the global mean.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stablerep_pl.distributed.devices import no_autocast
from stablerep_pl.distributed.gather import gather_batch, world_info
from stablerep_pl.losses.core import mean_over_anchors, multipos_cross_entropy, normalize
from stablerep_pl.losses.validation import (
    check_chunk_size,
    check_features,
    check_labels,
    check_same_dim,
    check_same_rows,
    check_temperature,
)


def multipos_contrastive_loss(
    features: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    *,
    gather_distributed: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """Multi-positive contrastive loss of this rank's anchors against the global batch.

    `features` [N_local, D] un-normalised; `labels` [N_local] integer ids, equal ids (on any rank)
    meaning the same caption/class. Computed in fp32 (fp64 stays fp64), also under autocast.
    """
    check_features(features, "features")
    check_labels(labels, features.shape[0], "labels", "features")
    scale = 1.0 / check_temperature(temperature)
    chunk_size = check_chunk_size(chunk_size)
    with no_autocast(features.device):
        local = normalize(features)
        local_labels = labels.to(device=features.device, dtype=torch.int64)
        (candidates, candidate_labels), (offset, _) = gather_batch(
            [local, local_labels], [True, False], gather_distributed
        )
        per_anchor = multipos_cross_entropy(
            local, candidates, local_labels, candidate_labels, scale, offset, chunk_size
        )
        return mean_over_anchors(per_anchor)


def ntxent_loss(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.1,
    *,
    gather_distributed: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """SimCLR's NT-Xent: row i of `z1` and row i of `z2` are two views of one image (m = 2).

    Exactly the multi-positive loss on cat([z1, z2]) with one id per image; ids are made unique across
    ranks as i·world + rank, so no extra collective is needed. Mean over the 2·N_local anchors.
    """
    check_features(z1, "z1")
    check_features(z2, "z2")
    check_same_rows(z1, z2, ("z1", "z2"))
    check_same_dim(z1, z2, ("z1", "z2"))
    rank, world = world_info(gather_distributed)
    ids = torch.arange(z1.shape[0], device=z1.device) * world + rank
    return multipos_contrastive_loss(
        torch.cat([z1, z2]),
        torch.cat([ids, ids]),
        temperature,
        gather_distributed=gather_distributed,
        chunk_size=chunk_size,
    )


class _TemperatureLoss(nn.Module):
    """Settings shared by the image-only contrastive losses (validated once, shown in repr)."""

    def __init__(
        self, temperature: float = 0.1, gather_distributed: bool = True, chunk_size: int | None = None
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.gather_distributed = gather_distributed
        self.chunk_size = check_chunk_size(chunk_size)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, gather_distributed={self.gather_distributed}, "
            f"chunk_size={self.chunk_size}"
        )


class MultiPosConLoss(_TemperatureLoss):
    """StableRep loss module: `loss(features [N_local, D], labels [N_local]) -> scalar`.

    Args:
        temperature: τ of the softmax (paper: 0.1).
        gather_distributed: with an initialised process group of world size > 1, use every rank's
            images as candidates (gradients flow back to the rank that produced them).
        chunk_size: process anchors in chunks of this many rows so that memory grows with
            chunk_size × N instead of N² (one extra matmul in the backward); None keeps one block.
    """

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return multipos_contrastive_loss(
            features,
            labels,
            self.temperature,
            gather_distributed=self.gather_distributed,
            chunk_size=self.chunk_size,
        )


class SupConLoss(MultiPosConLoss):
    """Supervised contrastive loss (Khosla et al., L_out): `loss(features, class_labels) -> scalar`.

    The same core as StableRep with class labels instead of caption ids: the target is uniform over the
    anchor's same-class images, as in the StableRep paper's SupCon baseline. Class labels are naturally
    shared across ranks. Unlike the original code, an anchor alone in its class gives 0, not NaN.
    """


class NTXentLoss(_TemperatureLoss):
    """SimCLR / NT-Xent: `loss(z1 [N_local, D], z2 [N_local, D]) -> scalar`, row i of both = one image.

    The m = 2 case of the multi-positive loss: each view's only positive is the other view; candidates
    are the other 2N − 1 views of the global batch. For m > 2 views or caption ids, use MultiPosConLoss.
    """

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return ntxent_loss(
            z1, z2, self.temperature, gather_distributed=self.gather_distributed, chunk_size=self.chunk_size
        )
