"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for any method, and the strategy that runs it.

Lightning's ModelParallelStrategy leaves parallelisation to `LightningModule.configure_model`, and
`BaseMethod.configure_model` calls `shard_method` here. Sharding units, innermost first: every module
of a known block type (timm ViT, ResNet and ConvNeXt blocks; torch transformer layers, i.e. the
StableRep+ text tower), then each child of the method that holds parameters (backbone, head, text
tower, projections), which becomes an FSDP2 root of its own. The method itself is not sharded:
Lightning calls `training_step`, not `forward`, and a child called alone (a probe encoding images
with the backbone) must be able to be a root. Parameters FSDP2 cannot own, 0-d ones (StableRep+'s
logit scale) and any held by the method directly, stay replicated: broadcast from rank 0 once, then
their gradients are averaged over the data-parallel ranks by a hook, as DDP would.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from datetime import timedelta

import torch.distributed as dist
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, fully_shard

# Import paths, so that a missing optional architecture never breaks the import of this module.
DEFAULT_BLOCK_TYPES: tuple[str, ...] = (
    "timm.models.vision_transformer.Block",
    "timm.models.resnet.BasicBlock",
    "timm.models.resnet.Bottleneck",
    "timm.models.convnext.ConvNeXtBlock",
    "torch.nn.TransformerEncoderLayer",
)


def resolve_block_types(paths: Iterable[str]) -> tuple[type[nn.Module], ...]:
    """Classes for the import paths that exist in the installed libraries."""
    found = []
    for path in paths:
        module_name, _, name = path.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module_name), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def replicated_parameters(method: nn.Module) -> set[nn.Parameter]:
    """Parameters left to replication: 0-d ones (FSDP2 refuses them) and the method's own."""
    own = {p for p in method.parameters(recurse=False)}
    return own | {p for p in method.parameters() if p.ndim == 0}


def shard_method(
    method: nn.Module, mesh: DeviceMesh, block_types: Sequence[str] = DEFAULT_BLOCK_TYPES
) -> None:
    """Apply `fully_shard` to known blocks, then to each child holding parameters (idempotent)."""
    if any(isinstance(m, FSDPModule) for m in method.modules()):
        return  # Lightning calls configure_model once per stage
    types = resolve_block_types(block_types)
    make_parameters_contiguous(method)
    replicated = replicated_parameters(method)
    for child in method.children():
        if not any(p not in replicated for p in child.parameters()):
            continue
        for module in reversed(list(child.modules())):  # innermost blocks first
            if module is not child and isinstance(module, types):
                fully_shard(module, mesh=mesh, ignored_params=replicated)
        fully_shard(child, mesh=mesh, ignored_params=replicated)
    replicate(replicated, mesh.get_group())


def make_parameters_contiguous(method: nn.Module) -> None:
    """FSDP2 shards contiguous parameters only, so `channels_last` weights (`TimmBackbone(channels_last=
    True)`) go back to the default layout; the activations stay channels_last, as the backbone converts
    its input and a convolution follows its input's layout."""
    for param in method.parameters():
        if not param.is_contiguous():
            param.data = param.data.contiguous()


def replicate(params: Iterable[nn.Parameter], group: dist.ProcessGroup) -> None:
    """Same values on every rank now; gradients averaged over `group` after every backward."""
    world = dist.get_world_size(group)

    def average(param: nn.Parameter) -> None:
        assert param.grad is not None
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM, group=group)
        param.grad.div_(world)

    for param in params:
        dist.broadcast(param.data, group=group, group_src=0)
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(average)


class FullyShardStrategy(ModelParallelStrategy):
    """FSDP2 data parallelism over every rank of every node (ModelParallelStrategy, no tensor parallel).

    Lightning's ModelParallelStrategy splits nodes × devices into data × tensor parallel groups by
    default; here every rank is data parallel, so `--trainer.num_nodes N` is all a multi-node run
    needs. It also applies `sync_batchnorm` (ModelParallelStrategy does not), before
    `configure_model` shards the module: BatchNorm layers cannot be swapped once sharded.
    """

    def __init__(
        self,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
        module = self.lightning_module
        if (
            self._layer_sync is not None
            and module is not None
            and module.trainer.state.fn == TrainerFn.FITTING
        ):
            self._layer_sync.apply(module)
