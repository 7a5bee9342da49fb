"""All-gather across ranks with gradients, for local-anchors × global-candidates losses.

Why our own autograd Function: `torch.distributed.nn.functional.all_gather` is correct (its backward
sums every rank's gradient for a gathered slot back to the producing rank) but, as of torch 2.14, it
warns as deprecated on every call and, on gloo, emulates reduce-scatter with one scatter per rank.
The Function below does the same thing with two collectives every backend has: `all_gather` forward
and `all_reduce` (sum) backward, keeping this rank's rows. The tests check it against
`torch.distributed.nn.functional.all_gather`.

Ranks may hold different numbers of rows (a short last batch, uneven sharding): sizes are gathered
first, every rank pads to the largest size, and the padding is dropped after the gather. Exchanging
the sizes costs one tiny collective and a device→host sync per call; nothing is cached between calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable


def world_info(enabled: bool = True) -> tuple[int, int]:
    """(rank, world size) of the default group; (0, 1) when disabled or no process group exists."""
    if not enabled or not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _gather_padded(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """Concatenate every rank's rows (rank order), padding to the largest size for the collective."""
    longest = max(sizes)
    if longest == 0:
        return x.new_empty((0, *x.shape[1:]))
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class _AllGatherRows(torch.autograd.Function):
    """Forward: every rank's rows. Backward: the sum over ranks of each rank's gradient for our rows."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: tuple[int, ...], rank: int) -> Tensor:  # type: ignore[override]
        ctx.sizes, ctx.rank = sizes, rank
        return _gather_padded(x, sizes)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        # Every rank holds the same global layout; rank r's loss contributed grad to all rows.
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return total[start : start + ctx.sizes[ctx.rank]], None, None


def gather_batch(
    tensors: Sequence[Tensor], with_grad: Sequence[bool], enabled: bool = True
) -> tuple[list[Tensor], list[int]]:
    """Gather each tensor's rows from all ranks (rank order) and return this rank's row offsets.

    `with_grad[k]` chooses the differentiable gather (features) or a plain one (labels). Without a
    process group, or when `enabled` is False, the tensors come back unchanged with offset 0. One
    extra tiny collective exchanges the row counts, so ranks may hold different numbers of rows.
    """
    if len(tensors) != len(with_grad):
        raise ValueError("gather_batch needs one with_grad flag per tensor")
    rank, world = world_info(enabled)
    if world == 1:
        return list(tensors), [0] * len(tensors)
    local = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64, device=tensors[0].device)
    table = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(table, local)
    sizes = torch.stack(table).tolist()  # sizes[r][k]: rows of tensor k on rank r
    gathered, offsets = [], []
    for k, (tensor, grad) in enumerate(zip(tensors, with_grad)):
        per_rank = tuple(int(row[k]) for row in sizes)
        gathered.append(
            _AllGatherRows.apply(tensor, per_rank, rank) if grad else _gather_padded(tensor, per_rank)
        )
        offsets.append(sum(per_rank[:rank]))
    return gathered, offsets


def all_gather_rows(x: Tensor, with_grad: bool = True, enabled: bool = True) -> Tensor:
    """Every rank's rows of `x` concatenated in rank order; differentiable when `with_grad`."""
    return gather_batch([x], [with_grad], enabled)[0][0]
