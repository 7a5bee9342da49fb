"""Contrastive losses for StableRep / StableRep+ and their baselines: pure functions + thin modules.

Every loss gathers across ranks by itself when a process group (world size > 1) is initialised
(local anchors × global candidates, gradients back to the producing rank), never builds N×N masks,
computes in fp32 under autocast, and offers a chunked mode whose memory grows with chunk × N.
`MultiPosQueueLoss` adds a MoCo-style queue of past projections and caption ids for small batches.
"""

from stablerep_pl.losses.core import (
    masked_row_reduce,
    multipos_cross_entropy,
    multipos_sigmoid,
    positive_stats,
)
from stablerep_pl.losses.image_text import (
    SIGLIP_INIT_LOGIT_BIAS,
    SIGLIP_INIT_LOGIT_SCALE,
    ClipLoss,
    MultiPosImageTextLoss,
    SigLipLoss,
    clip_loss,
    multipos_image_text_loss,
    siglip_loss,
)
from stablerep_pl.losses.multipos import (
    MultiPosConLoss,
    NTXentLoss,
    SupConLoss,
    multipos_contrastive_loss,
    ntxent_loss,
)
from stablerep_pl.losses.queue import MultiPosQueueLoss, multipos_queue_loss

__all__ = [
    "SIGLIP_INIT_LOGIT_BIAS",
    "SIGLIP_INIT_LOGIT_SCALE",
    "ClipLoss",
    "MultiPosConLoss",
    "MultiPosImageTextLoss",
    "MultiPosQueueLoss",
    "NTXentLoss",
    "SigLipLoss",
    "SupConLoss",
    "clip_loss",
    "masked_row_reduce",
    "multipos_contrastive_loss",
    "multipos_cross_entropy",
    "multipos_image_text_loss",
    "multipos_queue_loss",
    "multipos_sigmoid",
    "ntxent_loss",
    "positive_stats",
    "siglip_loss",
]
