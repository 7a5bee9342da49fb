"""Fused cores shared by every loss: O(N·D) positives and a masked, optionally chunked row reduction.

Why: the dense formulation builds several N×N float tensors (label mask, self mask, targets,
log-probabilities, their product). Here the positives' contribution comes from per-label feature sums
(no mask at all), and the only N×N tensor is the logits block itself (local rows × global columns),
reduced by a fused logsumexp / softplus-sum with the self column set to -inf in place. In chunked mode
not even the logits block is kept: rows are reduced chunk by chunk in the forward and recomputed in the
backward, so peak memory grows with chunk × N instead of N².
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

LOGSUMEXP = "logsumexp"
SOFTPLUS = "softplus"
_BLOCK_ELEMENTS = 1 << 24  # temporaries of the unchunked path: at most 64 MiB (fp32) per block


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bf16/fp32 inputs (stable under autocast, small τ); fp64 stays fp64."""
    return torch.promote_types(dtype, torch.float32)


def normalize(features: Tensor) -> Tensor:
    """ℓ2-normalised rows in the compute dtype."""
    return F.normalize(features.to(compute_dtype(features.dtype)), dim=1)


def as_scalar(value: Tensor | float, like: Tensor) -> Tensor:
    """A 0-dim tensor in `like`'s dtype/device; differentiable when `value` is a parameter."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(())


def mean_over_anchors(per_anchor: Tensor) -> Tensor:
    """Mean over this rank's anchors; 0 (still differentiable) for an empty local batch."""
    return per_anchor.sum() / max(per_anchor.shape[0], 1)


def _row_blocks(num_rows: int, rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + rows, num_rows)) for start in range(0, num_rows, rows)]


def _default_rows(num_columns: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(num_columns, 1))


def _block_logits(anchors: Tensor, candidates: Tensor, diagonal: int | None, start: int) -> Tensor:
    """anchors @ candidatesᵀ, with anchor row r's own column (diagonal + start + r) set to -inf."""
    logits = anchors @ candidates.T
    if diagonal is not None:
        logits.diagonal(diagonal + start).fill_(float("-inf"))
    return logits


def _reduce(logits: Tensor, kind: str) -> Tensor:
    if kind == LOGSUMEXP:
        return torch.logsumexp(logits, dim=1)
    return F.softplus(logits).sum(dim=1)


def _weights(logits: Tensor, reduced: Tensor, kind: str, in_place: bool) -> Tensor:
    """d reduced / d logits: softmax rows or elementwise sigmoid (in place for recomputed logits)."""
    if kind == LOGSUMEXP:
        # A row with no candidate at all has lse = -inf; give it zero weight instead of NaN.
        shift = torch.where(torch.isfinite(reduced), reduced, torch.zeros_like(reduced))[:, None]
        return (logits.sub_(shift) if in_place else logits - shift).exp_()
    return logits.sigmoid_() if in_place else torch.sigmoid(logits)


class _MaskedRowReduce(torch.autograd.Function):
    """Per anchor row: logsumexp_j or Σ_j softplus of anchors @ candidatesᵀ, self column excluded.

    Unchunked: the logits are computed with one matmul and kept for the backward. Chunked: nothing of
    size N² is kept; each chunk of rows is recomputed in the backward (one extra matmul).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, anchors: Tensor, candidates: Tensor, diagonal: int | None, kind: str, chunk_size: int | None
    ) -> Tensor:
        num_rows = anchors.shape[0]
        out = anchors.new_empty(num_rows)
        if chunk_size is None:
            logits = _block_logits(anchors, candidates, diagonal, 0)
            for start, stop in _row_blocks(num_rows, _default_rows(candidates.shape[0])):
                out[start:stop] = _reduce(logits[start:stop], kind)
            ctx.save_for_backward(anchors, candidates, out, logits)
        else:
            for start, stop in _row_blocks(num_rows, chunk_size):
                out[start:stop] = _reduce(
                    _block_logits(anchors[start:stop], candidates, diagonal, start), kind
                )
            ctx.save_for_backward(anchors, candidates, out)
        ctx.diagonal, ctx.kind, ctx.chunk_size = diagonal, kind, chunk_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:  # type: ignore[override]
        anchors, candidates, out, *kept = ctx.saved_tensors
        need_anchors, need_candidates = ctx.needs_input_grad[:2]
        grad_anchors = torch.empty_like(anchors) if need_anchors else None
        grad_candidates = torch.zeros_like(candidates) if need_candidates else None
        rows = ctx.chunk_size or _default_rows(candidates.shape[0])
        for start, stop in _row_blocks(anchors.shape[0], rows):
            if kept:
                weights = _weights(kept[0][start:stop], out[start:stop], ctx.kind, in_place=False)
            else:
                block = _block_logits(anchors[start:stop], candidates, ctx.diagonal, start)
                weights = _weights(block, out[start:stop], ctx.kind, in_place=True)
            # Scale by the incoming gradient on the N×D side of each matmul, not on the N×N weights.
            grad_rows = grad_out[start:stop, None]
            if grad_anchors is not None:
                grad_anchors[start:stop] = (weights @ candidates).mul_(grad_rows)
            if grad_candidates is not None:
                grad_candidates.addmm_(weights.T, anchors[start:stop] * grad_rows)
        return grad_anchors, grad_candidates, None, None, None


def masked_row_reduce(
    anchors: Tensor,
    candidates: Tensor,
    kind: str = LOGSUMEXP,
    diagonal: int | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """[n] per-row `logsumexp_j l_rj` (kind "logsumexp") or `Σ_j softplus(l_rj)` (kind "softplus").

    `l = anchors @ candidatesᵀ`; with `diagonal=k`, anchor row r never sees candidate k + r (itself:
    k is this rank's row offset in the gathered candidates). Only `chunk_size × N` is alive at once
    when `chunk_size` is set.
    """
    if kind not in (LOGSUMEXP, SOFTPLUS):
        raise ValueError(f"kind must be {LOGSUMEXP!r} or {SOFTPLUS!r}, got {kind!r}")
    return _MaskedRowReduce.apply(anchors, candidates, diagonal, kind, chunk_size)


def positive_stats(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    exclude_self: bool,
    self_rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Σ_{j∈pos(a)} a·b_j and |pos(a)| for every anchor, in O((N + U)·D) memory — no N×N mask.

    Positives of a are the candidates with a's label: Σ_j a·b_j = a·S_label(a), with S the per-label
    sum of candidate features (index_add over compacted labels). When the anchors are themselves among
    the candidates (`exclude_self`), a's own term and its count are removed: a·a, or a·r with `self_rows`
    when a's own column holds another encoding r of the same image (a momentum key).
    """
    num_anchors = anchor_labels.shape[0]
    unique, inverse = torch.unique(torch.cat([anchor_labels, candidate_labels]), return_inverse=True)
    anchor_ids, candidate_ids = inverse[:num_anchors], inverse[num_anchors:]
    num_ids = unique.shape[0]
    sums = candidates.new_zeros((num_ids, candidates.shape[1])).index_add(0, candidate_ids, candidates)
    counts = torch.bincount(candidate_ids, minlength=num_ids)
    dot = (anchors * sums[anchor_ids]).sum(dim=1)
    count = counts[anchor_ids]
    if exclude_self:
        own = anchors if self_rows is None else self_rows
        dot = dot - (anchors * own).sum(dim=1)
        count = count - 1
    return dot, count


def multipos_cross_entropy(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    scale: Tensor | float,
    self_offset: int | None = None,
    chunk_size: int | None = None,
    self_is_anchor: bool = True,
) -> Tensor:
    """[n] per-anchor H(p, q): q = softmax_j(scale·a·b_j), p uniform over a's positives.

    H(p, q) = logsumexp_j(scale·a·b_j) − scale · mean_{j∈pos(a)} a·b_j. Inputs are ℓ2-normalised.
    `self_offset` is the row offset inside `candidates` of each anchor's own column, which is excluded
    (same-modality losses); None when anchors and candidates are different sets (image→text). That
    column holds the anchor itself unless `self_is_anchor` is False (a momentum key of the same image).
    Anchors without positives give 0.
    """
    exclude_self = self_offset is not None
    own = None if self_is_anchor or not exclude_self else candidates[self_offset : self_offset + len(anchors)]
    dot, count = positive_stats(anchors, candidates, anchor_labels, candidate_labels, exclude_self, own)
    lse = masked_row_reduce(anchors * scale, candidates, LOGSUMEXP, self_offset, chunk_size)
    loss = lse - scale * dot / count.clamp(min=1).to(dot.dtype)
    return torch.where(count > 0, loss, torch.zeros_like(loss))


def multipos_sigmoid(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    scale: Tensor,
    bias: Tensor,
    chunk_size: int | None = None,
) -> Tensor:
    """[n] per-anchor SigLIP loss Σ_j −log σ(z_aj · (scale·a·b_j + bias)), z = +1 iff same label.

    −log σ(l) = softplus(l) − l and −log σ(−l) = softplus(l), so the sum is Σ_j softplus(l_aj) minus
    the positives' logits, which again come from per-label sums. The bias joins the matmul as an extra
    column ([scale·a, bias] · [b, 1] = l), so the fused reduction needs no special case for it.
    """
    dot, count = positive_stats(anchors, candidates, anchor_labels, candidate_labels, exclude_self=False)
    rows, columns = anchors.shape[0], candidates.shape[0]
    augmented_anchors = torch.cat([anchors * scale, bias.reshape(1, 1).expand(rows, 1)], dim=1)
    augmented_candidates = torch.cat([candidates, candidates.new_ones((columns, 1))], dim=1)
    total = masked_row_reduce(augmented_anchors, augmented_candidates, SOFTPLUS, None, chunk_size)
    return total - (scale * dot + bias * count.to(dot.dtype))
