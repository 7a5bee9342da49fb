"""BatchNorm synchronised across ranks on any device, as a Lightning `LayerSync` plugin.

Why: torch's SyncBatchNorm (what `Trainer(sync_batchnorm=True)` installs) refuses CPU tensors, and
DistributedDataParallel refuses CPU modules that contain it, so on a CPU process group (gloo: tests,
laptops, CPU clusters) the paper's projection head could not keep global BatchNorm statistics.
`SyncBatchNormAnyDevice` keeps torch's layer when the run is on an accelerator and installs
`CPUSyncBatchNorm` when it is on CPU: the same statistics (mean and biased variance over every rank's
rows; the unbiased variance in the running estimate) from two all-reduces, with the gradient flowing
back to every rank through the reductions.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.plugins import TorchSyncBatchNorm
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; backward sums every rank's gradient (each rank's loss used the global sum)."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:  # type: ignore[override]
        ctx.group = group
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        return total, None


def all_reduce_sum(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Differentiable sum of `x` over the ranks of `group` (the default group when None)."""
    return _AllReduceSum.apply(x, group)


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm over the rows of every rank in training; plain BatchNorm in eval or on one rank.

    Same parameters, buffers and state-dict keys as `nn.BatchNorm{1,2,3}d`, so checkpoints move freely
    between synchronised and single-process runs. Statistics are computed in float64 (see forward).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _synchronised(self) -> bool:
        return (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        )

    def forward(self, input: Tensor) -> Tensor:
        if not self._synchronised():
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        # float64: in float32 the reductions over every rank's pixels (and their autograd backward)
        # lost precision: measured on the quickstart's stem BatchNorm under 2-process DDP, its bias
        # gradient was 2000x further from the exact one than a single process's (16x for the stem
        # conv); in float64 both match one process's float32 rounding. Costs a double-precision
        # copy of each BatchNorm input on CPU, the only device this layer runs on.
        x = input.double()
        count = x.new_tensor([input.numel() // input.shape[1]])
        sums = all_reduce_sum(torch.cat([x.sum(dims), count]), self.process_group)
        total = sums[-1].detach()
        if float(total) <= 1:
            raise ValueError(f"expected more than 1 value per channel across ranks, got {int(total)}")
        mean = sums[:-1] / total
        centered = x - mean.view(shape)
        var = all_reduce_sum((centered * centered).sum(dims), self.process_group) / total
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * total / (total - 1))
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


class _PlainBatchNorm(_BatchNorm):
    """What `revert` puts back: BatchNorm accepting any input rank (the original 1d/2d/3d is not kept)."""

    def _check_input_dim(self, input: Tensor) -> None:
        return


def _replace(module: nn.Module, convert) -> nn.Module:
    """Depth-first replacement of modules by `convert(module)` (which returns None to keep one)."""
    replaced = convert(module)
    out = module if replaced is None else replaced
    for name, child in module.named_children():
        out.add_module(name, _replace(child, convert))
    return out


def _copy_batchnorm(source: _BatchNorm, target: _BatchNorm) -> _BatchNorm:
    """Share the parameters and buffers of `source` with `target` (same objects, as torch's convert)."""
    if source.affine:
        target.weight, target.bias = source.weight, source.bias
    target.running_mean, target.running_var = source.running_mean, source.running_var
    target.num_batches_tracked = source.num_batches_tracked
    target.train(source.training)
    return target


def convert_cpu_sync_batchnorm(
    module: nn.Module, process_group: dist.ProcessGroup | None = None
) -> nn.Module:
    """Every BatchNorm (not already synchronised) of `module` becomes a `CPUSyncBatchNorm`."""

    def convert(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, _BatchNorm) or isinstance(m, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
            return None
        new = CPUSyncBatchNorm(
            m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, process_group
        )
        return _copy_batchnorm(m, new)

    return _replace(module, convert)


def _device_type(model: nn.Module) -> str:
    """Where the run will put the model: the strategy's device for an attached LightningModule
    (the plugin runs before the model is moved), else the device of its first parameter."""
    try:
        return model.trainer.strategy.root_device.type  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):
        param = next(model.parameters(), None)
        return "cpu" if param is None else param.device.type


class SyncBatchNormAnyDevice(TorchSyncBatchNorm):
    """`Trainer(sync_batchnorm=True)` for any device: torch's SyncBatchNorm on accelerators,
    `CPUSyncBatchNorm` on CPU. Give it as `trainer.plugins` (allowed together with `sync_batchnorm`)."""

    def apply(self, model: nn.Module) -> nn.Module:
        if _device_type(model) == "cpu":
            return convert_cpu_sync_batchnorm(model)
        return super().apply(model)

    def revert(self, model: nn.Module) -> nn.Module:
        def convert(m: nn.Module) -> nn.Module | None:
            if not isinstance(m, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
                return None
            new = _PlainBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            return _copy_batchnorm(m, new)

        return _replace(model, convert)
