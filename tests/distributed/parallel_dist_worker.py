"""One rank of the 2-process gloo checks of stablerep_pl.distributed, run as a subprocess by the tests.

Usage: python parallel_dist_worker.py RANK WORLD INIT_FILE OUT_DIR

Every input is built from fixed seeds, identically on every rank (`build_*` below, imported by the
tests for the single-process references); each rank takes its rows (`ROWS`, uneven on purpose) and
saves what it computed to OUT_DIR/rank{RANK}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gloo_workers import gloo_worker_main

ROWS = {"bn2d": [3, 5], "bn1d": [4, 6], "shard": [4, 4]}


def build_bn_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "bn2d_x": torch.randn(8, 3, 4, 4, generator=g) * 2 + 1,
        "bn2d_w": torch.randn(8, 3, 4, 4, generator=g),
        "bn1d_x": torch.randn(10, 5, generator=g) - 3,
        "bn1d_w": torch.randn(10, 5, generator=g),
    }


def build_bn(kind: str) -> nn.Module:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(3) if kind == "bn2d" else nn.BatchNorm1d(5, momentum=None)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


class ToyMethod(nn.Module):
    """A backbone with a transformer block, a head and a 0-d parameter on the method itself."""

    def __init__(self) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        torch.manual_seed(2)
        self.backbone = nn.Sequential(nn.Linear(6, 8), Block(8, num_heads=2))
        self.head = nn.Linear(8, 3)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return (self.head(self.backbone(x)).mean(dim=1) * self.scale).pow(2).mean()


def build_shard_inputs() -> torch.Tensor:
    return torch.randn(8, 5, 6, generator=torch.Generator().manual_seed(3))


def rows(x: torch.Tensor, kind: str, rank: int) -> torch.Tensor:
    start = sum(ROWS[kind][:rank])
    return x[start : start + ROWS[kind][rank]]


def run_bn(kind: str, rank: int) -> dict:
    from stablerep_pl.distributed.sync_batchnorm import convert_cpu_sync_batchnorm

    data = build_bn_inputs()
    bn = convert_cpu_sync_batchnorm(build_bn(kind))
    x = rows(data[f"{kind}_x"], kind, rank).clone().requires_grad_(True)
    y = bn(x)
    (y * rows(data[f"{kind}_w"], kind, rank)).sum().backward()
    second = bn(x.detach())  # a second step: the running estimate follows momentum (or the average)
    return {
        "type": type(bn).__name__,
        "y": y.detach(),
        "second": second.detach(),
        "x_grad": x.grad,
        "weight_grad": bn.weight.grad,
        "bias_grad": bn.bias.grad,
        "running_mean": bn.running_mean.clone(),
        "running_var": bn.running_var.clone(),
        "eval_y": bn.eval()(x.detach()),
    }


def run_shard(rank: int, world: int) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from stablerep_pl.distributed.fully_shard import shard_method

    def full(t: torch.Tensor) -> torch.Tensor:
        return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()

    model = ToyMethod()
    if rank == 1:  # replicated parameters start from rank 0's values
        with torch.no_grad():
            model.scale.fill_(-7.0)
    shard_method(model, init_device_mesh("cpu", (world,), mesh_dim_names=("data_parallel",)))
    shard_method(model, init_device_mesh("cpu", (world,)))  # idempotent: nothing happens twice
    loss = model.loss(rows(build_shard_inputs(), "shard", rank))
    loss.backward()
    grads = {n: full(p.grad) for n, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    return {
        "loss": loss.detach(),
        "grads": grads,
        "params": {n: full(p) for n, p in model.named_parameters()},
        "sharded": sorted(n for n, m in model.named_modules() if isinstance(m, FSDPModule)),
    }


def compute(rank: int, world: int, extra: list[str]) -> dict:
    results = {kind: run_bn(kind, rank) for kind in ("bn2d", "bn1d")}
    results["shard"] = run_shard(rank, world)
    return results


if __name__ == "__main__":
    gloo_worker_main(compute)
