"""Per-rank random streams: rank 0 and single processes untouched, other ranks distinct."""

from __future__ import annotations

import torch

from stablerep_pl.distributed.seeding import decorrelate_ranks, rank_seed


def draw_after(rank: int, world_size: int) -> torch.Tensor:
    torch.manual_seed(0)
    decorrelate_ranks(rank, world_size)
    return torch.rand(4)


def test_rank_zero_and_single_process_keep_the_seed() -> None:
    torch.manual_seed(0)
    reference = torch.rand(4)
    assert torch.equal(draw_after(0, 4), reference) and torch.equal(draw_after(3, 1), reference)


def test_other_ranks_get_distinct_reproducible_streams() -> None:
    draws = [draw_after(rank, 4) for rank in range(4)]
    assert len({tuple(d.tolist()) for d in draws}) == 4
    assert torch.equal(draw_after(2, 4), draws[2])
    assert len({rank_seed(0, r) for r in range(64)}) == 64 and rank_seed(5, 0) == 5
