"""Two gloo ranks vs one process: CPUSyncBatchNorm and FSDP2 `shard_method` (parallel_dist_worker.py).

BatchNorm: each rank normalises its rows (3 and 5, 4 and 6: uneven) with the statistics of all rows,
so the outputs concatenated over ranks, the input gradients concatenated, the parameter gradients
summed over ranks and the running statistics on every rank equal one nn.BatchNorm on all rows.
FSDP2: a toy method (Linear + timm ViT block backbone, Linear head, a 0-d scale held by the method
itself) sharded by `shard_method`; each rank back-propagates the loss of its rows, so the gradients
seen after the backward (FSDP2's average, the replicated scale's hook average) and the parameters after
an SGD step equal one process on the mean of the two ranks' losses.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from gloo_workers import run_gloo_workers

HERE = Path(__file__).resolve().parent
SPEC = importlib.util.spec_from_file_location("parallel_dist_worker", HERE / "parallel_dist_worker.py")
worker = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(worker)
WORLD = 2
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("parallel_dist")
    return run_gloo_workers(HERE / "parallel_dist_worker.py", tmp, world=WORLD, timeout=120)


@pytest.mark.parametrize("kind", ["bn2d", "bn1d"])
def test_cpu_sync_batchnorm_equals_batchnorm_on_all_rows(ranks: list[dict], kind: str) -> None:
    data = worker.build_bn_inputs()
    bn = worker.build_bn(kind)
    x = data[f"{kind}_x"].clone().requires_grad_(True)
    y = bn(x)
    (y * data[f"{kind}_w"]).sum().backward()
    second = bn(x.detach())
    results = [r[kind] for r in ranks]
    assert {r["type"] for r in results} == {"CPUSyncBatchNorm"}
    torch.testing.assert_close(torch.cat([r["y"] for r in results]), y.detach(), **TOL)
    torch.testing.assert_close(torch.cat([r["second"] for r in results]), second.detach(), **TOL)
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in results]), x.grad, **TOL)
    torch.testing.assert_close(sum(r["weight_grad"] for r in results), bn.weight.grad, **TOL)
    torch.testing.assert_close(sum(r["bias_grad"] for r in results), bn.bias.grad, **TOL)
    for r in results:  # unbiased variance in the running estimate, identical on every rank
        torch.testing.assert_close(r["running_mean"], bn.running_mean, **TOL)
        torch.testing.assert_close(r["running_var"], bn.running_var, **TOL)
    bn.eval()
    torch.testing.assert_close(torch.cat([r["eval_y"] for r in results]), bn(x.detach()), **TOL)


def test_shard_method_equals_one_process(ranks: list[dict]) -> None:
    model = worker.ToyMethod()
    x = worker.build_shard_inputs()
    losses = [model.loss(worker.rows(x, "shard", r)) for r in range(WORLD)]
    (sum(losses) / WORLD).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for rank, result in enumerate(r["shard"] for r in ranks):
        assert {"backbone", "backbone.1", "head"} <= set(result["sharded"])
        assert not {"", "scale"} & set(result["sharded"])  # the method itself is not a shard root
        torch.testing.assert_close(result["loss"], losses[rank].detach(), **TOL)
        assert result["grads"].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(result["grads"][name], grad, **TOL, msg=name)
        for name, param in model.named_parameters():
            torch.testing.assert_close(result["params"][name], param.detach(), **TOL, msg=name)
