"""SyncBatchNormAnyDevice and CPUSyncBatchNorm in one process (the 2-rank checks are in
test_parallel_distributed.py)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.plugins import TorchSyncBatchNorm
from torch import nn

from stablerep_pl.distributed import CPUSyncBatchNorm, SyncBatchNormAnyDevice
from stablerep_pl.distributed.sync_batchnorm import convert_cpu_sync_batchnorm
from stablerep_pl.models.heads import ProjectionHead


def head() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), ProjectionHead(4 * 36, 16, 8, 3)
    )


def test_plugin_installs_cpu_layers_on_cpu_and_reverts_to_the_same_state() -> None:
    model = head()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plugin = SyncBatchNormAnyDevice()
    assert isinstance(plugin, TorchSyncBatchNorm)  # so Lightning accepts it with sync_batchnorm=True
    synced = plugin.apply(model)
    kinds = [type(m) for m in synced.modules() if "BatchNorm" in type(m).__name__]
    assert kinds == [CPUSyncBatchNorm] * 3
    assert synced.state_dict().keys() == before.keys()  # checkpoints load either way
    reverted = plugin.revert(synced)
    assert not any(isinstance(m, (CPUSyncBatchNorm, nn.SyncBatchNorm)) for m in reverted.modules())
    for key, value in reverted.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_plugin_keeps_torch_sync_batchnorm_off_cpu() -> None:
    model = head().to("meta")  # stands for an accelerator: anything that is not the CPU
    synced = SyncBatchNormAnyDevice().apply(model)
    assert {type(m) for m in synced.modules() if "BatchNorm" in type(m).__name__} == {nn.SyncBatchNorm}
    reverted = SyncBatchNormAnyDevice().revert(synced)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in reverted.modules())


@pytest.mark.parametrize("momentum", [0.1, None])
def test_without_a_process_group_it_is_plain_batchnorm(momentum: float | None) -> None:
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(3, momentum=momentum)
    layer = convert_cpu_sync_batchnorm(nn.BatchNorm2d(3, momentum=momentum))
    x = torch.randn(6, 3, 5, 5)
    for _ in range(2):
        torch.testing.assert_close(layer(x), reference(x))
    torch.testing.assert_close(layer.running_var, reference.running_var)
    layer.eval(), reference.eval()
    torch.testing.assert_close(layer(x), reference(x))
