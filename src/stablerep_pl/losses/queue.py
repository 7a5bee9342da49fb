"""StableRep's multi-positive loss with a MoCo-style memory queue, for small batches.

Why: the loss wants thousands of candidates per anchor, and the paper holds 8256 images per step on
32 GPUs; on one or two GPUs the batch is a few hundred. The queue keeps the projections of the last
`queue_size` images of earlier global batches *with their caption ids*, so candidates are the current
global batch plus the queue, and positives are every candidate with the anchor's caption id: an image
of the same caption seen a few steps ago (next epoch on the fly, or a reused rendering) is a true
positive, not a negative. The anchor itself is excluded exactly as in `MultiPosConLoss`; queue entries
are constants (no gradient). Entries come from a momentum encoder (`keys`) or, without one, from the
detached current projections. With keys, the current batch's candidates are its keys too (MoCo: the
online projections are only the anchors), so every candidate comes from the same slowly moving
encoder; mixing online batch candidates with momentum queue entries let the network separate "this
step" from "earlier steps" and it learnt nothing (measured, README "Small batches: a memory queue").

Distributed: each rank's anchors meet the gathered global batch and the queue; after the loss every
rank enqueues the same gathered rows in rank order, so all ranks hold the same queue without
exchanging it. The queue is a set of buffers, hence in `state_dict` and in every checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stablerep_pl.distributed.devices import no_autocast
from stablerep_pl.distributed.gather import gather_batch
from stablerep_pl.losses.core import mean_over_anchors, multipos_cross_entropy, normalize
from stablerep_pl.losses.validation import (
    check_chunk_size,
    check_features,
    check_labels,
    check_same_dim,
    check_same_rows,
    check_temperature,
)


def _queue_loss(
    features: Tensor,
    labels: Tensor,
    keys: Tensor | None,
    queue_features: Tensor,
    queue_labels: Tensor,
    scale: float,
    gather_distributed: bool,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(mean loss of this rank's anchors, rows to enqueue [B, D], their ids [B]), B = global batch.

    The rows to enqueue are the batch's candidates, detached: the gathered normalised `keys` when
    given, else the gathered features; either way in rank order, the same on every rank.
    """
    local = normalize(features)
    local_labels = labels.to(device=features.device, dtype=torch.int64)
    tensors, with_grad = [local, local_labels], [True, False]
    if keys is not None:
        tensors.append(normalize(keys.detach()))
        with_grad.append(False)
    gathered, offsets = gather_batch(tensors, with_grad, gather_distributed)
    batch, batch_labels = gathered[0], gathered[1]
    # With keys, the batch's candidates are its keys, as in MoCo: positives and negatives then come
    # from the same encoder as the queue. With online candidates next to momentum (or older) queue
    # entries, an anchor can tell "this step" from "earlier steps" and push the queue away by drifting,
    # without learning content (measured: the loss stays at log(#candidates), README "Small batches").
    batch_candidates = gathered[2] if keys is not None else batch
    candidates, candidate_labels = batch_candidates, batch_labels
    if queue_features.shape[0] > 0:  # empty and no keys: exactly the plain loss, gradients bit for bit
        # The batch comes first, so each anchor's own column stays at its offset in the gathered batch.
        candidates = torch.cat([batch_candidates, queue_features.detach().to(batch.dtype)])
        candidate_labels = torch.cat([batch_labels, queue_labels.to(batch_labels)])
    per_anchor = multipos_cross_entropy(
        local, candidates, local_labels, candidate_labels, scale, offsets[0], chunk_size, keys is None
    )
    return mean_over_anchors(per_anchor), batch_candidates.detach(), batch_labels


def multipos_queue_loss(
    features: Tensor,
    labels: Tensor,
    queue_features: Tensor,
    queue_labels: Tensor,
    temperature: float = 0.1,
    *,
    gather_distributed: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """Multi-positive loss of this rank's anchors against [global batch ; queue].

    `features` [N_local, D] un-normalised, `labels` [N_local] caption ids; `queue_features` [Q, D]
    ℓ2-normalised past projections (only filled entries: every row is a candidate) and `queue_labels`
    [Q] their caption ids. The queue is treated as a constant. With Q = 0 this is exactly
    `multipos_contrastive_loss`.
    """
    check_features(features, "features")
    check_labels(labels, features.shape[0], "labels", "features")
    check_features(queue_features, "queue_features")
    check_labels(queue_labels, queue_features.shape[0], "queue_labels", "queue_features")
    check_same_dim(features, queue_features, ("features", "queue_features"))
    scale = 1.0 / check_temperature(temperature)
    chunk_size = check_chunk_size(chunk_size)
    with no_autocast(features.device):
        loss, _, _ = _queue_loss(
            features, labels, None, queue_features, queue_labels, scale, gather_distributed, chunk_size
        )
    return loss


class MultiPosQueueLoss(nn.Module):
    """StableRep loss over the global batch plus a FIFO queue of past projections and caption ids.

    `loss(features [N_local, D], labels [N_local], keys [N_local, D] | None) -> scalar`. In training
    mode the loss reads the filled part of the queue, then enqueues the gathered `keys` (momentum
    encoder projections) or, without keys, the gathered detached features. With keys, the batch's
    candidates are the gathered keys (constants) and only the anchors carry gradient. In eval mode
    the queue is neither read nor written, so the value is `MultiPosConLoss`'s: held-out captions are numbered
    apart from the training captions (their ids would meet false positives in the queue), and a
    validation pass must not change the training state.

    Args:
        dim: projection width D (the queue's buffers are allocated up front so that a checkpoint can
            be loaded before the first step).
        queue_size: past images kept; 0 disables the queue.
        temperature: τ of the softmax (paper: 0.1).
        gather_distributed: candidates and enqueued rows come from every rank (all ranks then hold
            the same queue); False keeps each rank's batch and queue to itself.
        chunk_size: anchors per chunk in the fused core (memory chunk × (N + Q) instead of N × (N + Q)).

    Buffers: `queue_features` [queue_size, D] (normalised rows), `queue_labels` [queue_size] (−1 in
    empty slots), `queue_pointer` (next slot to write), `queue_filled` (slots holding an image; the
    filled slots are always the first ones, so empty slots are never candidates).
    """

    queue_features: Tensor
    queue_labels: Tensor
    queue_pointer: Tensor
    queue_filled: Tensor

    def __init__(
        self,
        dim: int,
        queue_size: int = 4096,
        temperature: float = 0.1,
        gather_distributed: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int (the projection width), got {dim!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            raise ValueError(f"queue_size must be an int >= 0 (0: no queue), got {queue_size!r}")
        self.temperature = check_temperature(temperature)
        self.gather_distributed = gather_distributed
        self.chunk_size = check_chunk_size(chunk_size)
        self.register_buffer("queue_features", torch.zeros(queue_size, dim))
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.int64))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.int64))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.int64))

    @property
    def queue_size(self) -> int:
        return self.queue_features.shape[0]

    def extra_repr(self) -> str:
        dim = self.queue_features.shape[1]
        return (
            f"dim={dim}, queue_size={self.queue_size}, temperature={self.temperature}, "
            f"gather_distributed={self.gather_distributed}, chunk_size={self.chunk_size}"
        )

    def queued(self) -> tuple[Tensor, Tensor]:
        """The filled slots: (features [F, D], caption ids [F]). One device→host read of the count."""
        filled = int(self.queue_filled)
        return self.queue_features[:filled], self.queue_labels[:filled]

    def nothing_queued(self) -> tuple[Tensor, Tensor]:
        """No entries (eval mode), in the queue's dtype and device."""
        return self.queue_features[:0], self.queue_labels[:0]

    def forward(self, features: Tensor, labels: Tensor, keys: Tensor | None = None) -> Tensor:
        check_features(features, "features")
        check_labels(labels, features.shape[0], "labels", "features")
        if keys is not None:
            check_features(keys, "keys")
            check_same_rows(features, keys, ("features", "keys"))
            check_same_dim(features, keys, ("features", "keys"))
        check_same_dim(features, self.queue_features, ("features", "queue_features"))
        use_queue = self.training
        queue_features, queue_labels = self.queued() if use_queue else self.nothing_queued()
        with no_autocast(features.device):
            loss, new_rows, new_labels = _queue_loss(
                features,
                labels,
                keys if use_queue else None,
                queue_features,
                queue_labels,
                1.0 / self.temperature,
                self.gather_distributed,
                self.chunk_size,
            )
        if use_queue:
            self.enqueue(new_rows, new_labels)
        return loss

    @torch.no_grad()
    def enqueue(self, features: Tensor, labels: Tensor) -> None:
        """Write rows FIFO at the pointer, wrapping around (a batch larger than the queue leaves its
        newest rows). Call it with the same rows on every rank to keep the ranks' queues identical."""
        size = self.queue_size
        if size == 0 or features.shape[0] == 0:
            return
        count, dropped = features.shape[0], max(0, features.shape[0] - size)
        # As if every row were written in turn: the k-th row ever enqueued sits in slot k mod size.
        first = self.queue_pointer + dropped
        slots = (first + torch.arange(count - dropped, device=first.device)) % size
        self.queue_features.index_copy_(0, slots, features[dropped:].detach().to(self.queue_features))
        self.queue_labels.index_copy_(0, slots, labels[dropped:].to(self.queue_labels))
        self.queue_pointer.copy_((self.queue_pointer + count) % size)
        self.queue_filled.copy_((self.queue_filled + count).clamp(max=size))
