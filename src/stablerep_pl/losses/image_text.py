"""Image-text losses: StableRep+'s multi-positive CLIP loss, plain CLIP, and SigLIP.

All take un-normalised features (normalised inside, in fp32) and `logit_scale`, the multiplier itself
(already exponentiated; the caller owns the learnable parameter and its clamp). Every rank uses its local
images/texts as anchors against the global texts/images; each direction is averaged over this rank's
anchors of that direction. An anchor without a positive in the other modality (an image whose caption
is not in the global batch) contributes 0 and still counts in the mean, as in the image-only loss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stablerep_pl.distributed.devices import no_autocast
from stablerep_pl.distributed.gather import gather_batch, world_info
from stablerep_pl.losses.core import (
    as_scalar,
    mean_over_anchors,
    multipos_cross_entropy,
    multipos_sigmoid,
    normalize,
)
from stablerep_pl.losses.validation import (
    check_chunk_size,
    check_features,
    check_labels,
    check_same_dim,
    check_same_rows,
    check_scalar,
)

SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)  # SigLIP paper: t' = log 10, logit_scale = exp(t') = 10
SIGLIP_INIT_LOGIT_BIAS = -10.0


def _check_pair(image_features: Tensor, text_features: Tensor) -> None:
    check_features(image_features, "image_features")
    check_features(text_features, "text_features")
    check_same_dim(image_features, text_features, ("image_features", "text_features"))


def _check_labels(image_labels: Tensor, text_labels: Tensor, images: Tensor, texts: Tensor) -> None:
    check_labels(image_labels, images.shape[0], "image_labels", "image_features")
    check_labels(text_labels, texts.shape[0], "text_labels", "text_features")


def _paired_ids(image_features: Tensor, text_features: Tensor, gather_distributed: bool) -> Tensor:
    """Row i of the images is paired with row i of the texts; ids unique across ranks (i·world + rank)."""
    check_same_rows(image_features, text_features, ("image_features", "text_features"))
    rank, world = world_info(gather_distributed)
    return torch.arange(image_features.shape[0], device=image_features.device) * world + rank


def multipos_image_text_loss(
    image_features: Tensor,
    text_features: Tensor,
    image_labels: Tensor,
    text_labels: Tensor,
    logit_scale: Tensor | float,
    *,
    gather_distributed: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """(L_image→text + L_text→image) / 2 with multi-positive targets.

    An image's positives are the global texts with its label; a text's positives are the global
    images with its label (uniform target over them). Logits = logit_scale · image·textᵀ.
    """
    _check_pair(image_features, text_features)
    _check_labels(image_labels, text_labels, image_features, text_features)
    check_scalar(logit_scale, "logit_scale", positive=True)
    chunk_size = check_chunk_size(chunk_size)
    with no_autocast(image_features.device):
        images, texts = normalize(image_features), normalize(text_features)
        scale = as_scalar(logit_scale, images)
        img_labels = image_labels.to(device=images.device, dtype=torch.int64)
        txt_labels = text_labels.to(device=images.device, dtype=torch.int64)
        (all_images, all_texts, all_img_labels, all_txt_labels), _ = gather_batch(
            [images, texts, img_labels, txt_labels], [True, True, False, False], gather_distributed
        )
        image_to_text = multipos_cross_entropy(
            images, all_texts, img_labels, all_txt_labels, scale, None, chunk_size
        )
        text_to_image = multipos_cross_entropy(
            texts, all_images, txt_labels, all_img_labels, scale, None, chunk_size
        )
        return (mean_over_anchors(image_to_text) + mean_over_anchors(text_to_image)) / 2


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    *,
    gather_distributed: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """CLIP's symmetric InfoNCE: row i of the images and row i of the texts are a pair."""
    _check_pair(image_features, text_features)
    ids = _paired_ids(image_features, text_features, gather_distributed)
    return multipos_image_text_loss(
        image_features,
        text_features,
        ids,
        ids,
        logit_scale,
        gather_distributed=gather_distributed,
        chunk_size=chunk_size,
    )


def siglip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    image_labels: Tensor | None = None,
    text_labels: Tensor | None = None,
    *,
    gather_distributed: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """SigLIP: mean over local images of Σ_{global texts} −log σ(z · (logit_scale·x·y + logit_bias)).

    z = +1 for a matching pair, −1 otherwise. Without labels, row i of the images matches row i of the
    texts; with labels, an image matches every text with its label (multi-positive). Only the texts are
    gathered: local images × global texts already covers every pair once across ranks.
    """
    _check_pair(image_features, text_features)
    check_scalar(logit_scale, "logit_scale", positive=True)
    check_scalar(logit_bias, "logit_bias", positive=False)
    chunk_size = check_chunk_size(chunk_size)
    if (image_labels is None) != (text_labels is None):
        raise ValueError("pass both image_labels and text_labels, or neither (paired rows)")
    if image_labels is None or text_labels is None:
        image_labels = text_labels = _paired_ids(image_features, text_features, gather_distributed)
    _check_labels(image_labels, text_labels, image_features, text_features)
    with no_autocast(image_features.device):
        images, texts = normalize(image_features), normalize(text_features)
        scale, bias = as_scalar(logit_scale, images), as_scalar(logit_bias, images)
        img_labels = image_labels.to(device=images.device, dtype=torch.int64)
        txt_labels = text_labels.to(device=images.device, dtype=torch.int64)
        (all_texts, all_txt_labels), _ = gather_batch([texts, txt_labels], [True, False], gather_distributed)
        per_image = multipos_sigmoid(images, all_texts, img_labels, all_txt_labels, scale, bias, chunk_size)
        return mean_over_anchors(per_image)


class _ImageTextLoss(nn.Module):
    def __init__(self, gather_distributed: bool = True, chunk_size: int | None = None) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed
        self.chunk_size = check_chunk_size(chunk_size)

    def extra_repr(self) -> str:
        return f"gather_distributed={self.gather_distributed}, chunk_size={self.chunk_size}"


class MultiPosImageTextLoss(_ImageTextLoss):
    """StableRep+ image-text loss:
    `loss(image_features, text_features, image_labels, text_labels, logit_scale) -> scalar`.

    Typically n·m images and n texts per rank, labelled by caption id. Returns
    (L_image→text + L_text→image) / 2; `logit_scale` is already exponentiated.
    """

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        image_labels: Tensor,
        text_labels: Tensor,
        logit_scale: Tensor | float,
    ) -> Tensor:
        return multipos_image_text_loss(
            image_features,
            text_features,
            image_labels,
            text_labels,
            logit_scale,
            gather_distributed=self.gather_distributed,
            chunk_size=self.chunk_size,
        )


class ClipLoss(_ImageTextLoss):
    """CLIP: `loss(image_features, text_features, logit_scale) -> scalar`, one image per caption."""

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
        return clip_loss(
            image_features,
            text_features,
            logit_scale,
            gather_distributed=self.gather_distributed,
            chunk_size=self.chunk_size,
        )


class SigLipLoss(_ImageTextLoss):
    """SigLIP: `loss(image_features, text_features, logit_scale, logit_bias, image_labels=None,
    text_labels=None) -> scalar`.

    The caller owns the learnable scale and bias, like `logit_scale` for the CLIP losses (one place for
    parameters, optimiser groups and clamping): initialise t' = SIGLIP_INIT_LOGIT_SCALE (log 10) and
    b = SIGLIP_INIT_LOGIT_BIAS (−10) as in the SigLIP paper and pass `t'.exp()` and `b`.
    """

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        logit_bias: Tensor | float,
        image_labels: Tensor | None = None,
        text_labels: Tensor | None = None,
    ) -> Tensor:
        return siglip_loss(
            image_features,
            text_features,
            logit_scale,
            logit_bias,
            image_labels,
            text_labels,
            gather_distributed=self.gather_distributed,
            chunk_size=self.chunk_size,
        )
