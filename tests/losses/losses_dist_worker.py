"""One rank of the 2-process gloo loss checks, run as a subprocess by test_losses_distributed.py.

Usage: python losses_dist_worker.py RANK WORLD INIT_FILE SCENARIOS_FILE OUT_DIR (see tests/gloo_workers.py)

For every scenario (global tensors + per-rank row splits, written by the test) this rank takes its rows,
replicates the scalar inputs, computes the loss, back-propagates `weight[rank] · loss` (1/world is DDP's
averaging; n_r/N weights ranks with unequal sizes) and saves the loss and every input's gradient.
It also compares our differentiable gather with torch.distributed.nn.functional.all_gather.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.distributed.nn.functional as dist_fn

import stablerep_pl.losses as losses
from stablerep_pl.distributed.gather import all_gather_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gloo_workers import gloo_worker_main


def _local(tensor: torch.Tensor, splits: list[int] | None, rank: int) -> torch.Tensor:
    if splits is None:
        return tensor.clone()  # replicated (logit_scale, logit_bias)
    start = sum(splits[:rank])
    return tensor[start : start + splits[rank]].clone()


def run_scenario(scenario: dict, rank: int) -> dict:
    loss_fn = getattr(losses, scenario["loss"])(**scenario["init"])
    names = scenario["args"]
    args = [_local(scenario["tensors"][n], scenario["splits"].get(n), rank) for n in names]
    for arg in args:
        if arg.is_floating_point():
            arg.requires_grad_(True)
    value = loss_fn(*args)
    (value * scenario["weights"][rank]).backward()
    grads = {n: a.grad for n, a in zip(names, args) if a.is_floating_point()}
    return {"loss": value.detach(), "grads": grads}


def gather_check(rank: int, world: int, sizes: list[int]) -> dict:
    """Our gather vs torch's (equal sizes) and vs the analytic gradient (any sizes)."""
    torch.manual_seed(100 + rank)
    x = torch.randn(sizes[rank], 3, dtype=torch.float64, requires_grad=True)
    weights = torch.arange(sum(sizes) * 3, dtype=torch.float64).reshape(-1, 3)  # same on all ranks
    gathered = all_gather_rows(x)
    (gathered * weights).sum().backward()
    out = {"ours": gathered.detach(), "ours_grad": x.grad.clone()}
    if len(set(sizes)) == 1:
        x.grad = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            theirs = torch.cat(dist_fn.all_gather(x))
        (theirs * weights).sum().backward()
        out |= {"theirs": theirs.detach(), "theirs_grad": x.grad.clone()}
    return out


def compute(rank: int, world: int, extra: list[str]) -> dict:
    scenarios = torch.load(extra[0], weights_only=False)
    results = {name: run_scenario(s, rank) for name, s in scenarios.items()}
    results["gather_equal"] = gather_check(rank, world, [4] * world)
    results["gather_unequal"] = gather_check(rank, world, [2 + 3 * r for r in range(world)])
    return results


if __name__ == "__main__":
    gloo_worker_main(compute)
