"""Everything a training step shares across ranks, in one all-reduce: losses, finiteness, data skips.

Why one collective: `self.log_dict(..., sync_dist=True)` costs a barrier and an all-reduce per logged
value (8 collectives a step for StableRep+), and the non-finite decision and the data pipeline's skip
count would add more. Packing them into one small tensor costs one all-reduce and one device→host
copy a step. Every rank gets the same result, so all ranks take the same skip/stop decision (a rank
that skipped backward alone would leave the others waiting in DDP's gradient all-reduce forever).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from stablerep_pl.distributed.gather import world_info


class NonFiniteLossError(RuntimeError):
    """A training loss was NaN or infinite: the run stops before the step changes any weight."""


@dataclass(frozen=True)
class StepStats:
    """One step's values, identical on every rank."""

    means: dict[str, Tensor]  # each loss term's mean over ranks (0-d, on the loss's device)
    nonfinite_ranks: dict[str, int]  # term → number of ranks where it was NaN/inf (only those > 0)
    skipped_samples: int  # samples the data pipeline skipped since the previous batch, all ranks
    skips_reported: bool  # some rank's batch carried `skipped` (else the pipeline does not count)
    world_size: int


def reduce_step_stats(losses: dict[str, Tensor], skipped: Tensor | None, data_replicas: int = 1) -> StepStats:
    """All-reduce (sum) `[loss terms | non-finite flags | skipped | reported]` once, then unpack.

    The means equal Lightning's `sync_dist=True` mean (sum over ranks / world size). `data_replicas`
    ranks read the same batch (tensor parallelism), so the skip count is divided by it.
    """
    names = list(losses)
    values = torch.stack([losses[name].detach().reshape(()) for name in names])
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    reported = skipped is not None
    count = skipped.to(values) if skipped is not None else values.new_zeros(())
    packed = torch.cat(
        [
            values,
            (~torch.isfinite(values)).to(values),
            torch.stack([count, values.new_tensor(float(reported))]),
        ]
    )
    _, world = world_info()
    if world > 1:
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    sums = packed[: len(names)] / world
    flags = packed[len(names) :].tolist()  # the one device→host copy: the decision is made on the host
    nonfinite = {name: round(n) for name, n in zip(names, flags[: len(names)]) if n > 0}
    return StepStats(
        means={name: sums[i] for i, name in enumerate(names)},
        nonfinite_ranks=nonfinite,
        skipped_samples=round(flags[-2]) // data_replicas,
        skips_reported=flags[-1] > 0,
        world_size=world,
    )


def nonfinite_message(stats: StepStats, global_step: int, epoch: int) -> str:
    """One line: where, which terms, what is safe on disk, and how to skip instead."""
    terms = ", ".join(
        f"train/{name} on {n} of {stats.world_size} rank(s)" for name, n in stats.nonfinite_ranks.items()
    )
    return (
        f"non-finite training loss at global step {global_step} (epoch {epoch}): {terms}. "
        "This step changed no weight, so the last checkpoint on disk is the last good state. "
        "To skip such steps instead, set nonfinite_loss='skip' on the model "
        "(--model.init_args.nonfinite_loss=skip)."
    )
