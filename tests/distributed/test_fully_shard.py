"""`shard_method` helpers in one process (sharding itself is checked on 2 ranks in
test_parallel_distributed.py and by the FSDP2 fit in tests/distributed)."""

from __future__ import annotations

import torch
from timm.models.resnet import BasicBlock
from timm.models.vision_transformer import Block
from torch import nn

from stablerep_pl.distributed.fully_shard import (
    DEFAULT_BLOCK_TYPES,
    make_parameters_contiguous,
    replicated_parameters,
    resolve_block_types,
)


def test_block_types_cover_vit_resnet_and_text_layers_and_skip_missing_ones() -> None:
    types = resolve_block_types(
        [*DEFAULT_BLOCK_TYPES, "timm.models.not_a_module.Block", "torch.nn.NotALayer"]
    )
    assert {Block, BasicBlock, nn.TransformerEncoderLayer} <= set(types)
    assert len(types) == len(DEFAULT_BLOCK_TYPES)


def test_replicated_parameters_are_scalars_and_the_method_s_own() -> None:
    method = nn.Module()
    method.backbone = nn.Linear(2, 2)
    method.own = nn.Parameter(torch.ones(3))
    method.backbone.scalar = nn.Parameter(torch.tensor(1.0))
    assert replicated_parameters(method) == {method.own, method.backbone.scalar}


def test_channels_last_weights_are_made_contiguous_for_fsdp2_with_their_values() -> None:
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    before = conv.weight.detach().clone()
    assert not conv.weight.is_contiguous()
    make_parameters_contiguous(conv)
    assert conv.weight.is_contiguous() and torch.equal(conv.weight, before)
