"""Backbones out of training checkpoints: what `stablerep export` writes and `stablerep probe` loads.

`BaseMethod.on_save_checkpoint` records the timm name and constructor arguments, so a checkpoint is
enough to rebuild the backbone without the training config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

PREFIX = "backbone.model."


def read_backbone(checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`({"name", "kwargs"}, timm-named weights)` of the backbone in a Lightning checkpoint."""
    path = Path(checkpoint)
    if path.is_dir() and (path / ".metadata").is_file():
        raise ValueError(
            f"{path} is a sharded (FSDP) checkpoint folder; consolidate it into one file first: "
            f"python -m stablerep_pl.distributed.consolidate {path}  (then pass {path}.consolidated)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    spec = ckpt.get("timm_backbone")
    if spec is None:
        raise ValueError(f"{path} has no timm backbone record (was it trained with TimmBackbone?)")
    weights = {k[len(PREFIX) :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(PREFIX)}
    if not weights:
        raise ValueError(f"{path} holds no '{PREFIX}*' weights")
    return spec, weights


def load_backbone(checkpoint: str | Path, random_init: bool = False, seed: int = 0) -> nn.Module:
    """The checkpoint's timm backbone (`num_classes=0`: pooled features) in eval mode.

    With `random_init=True` the same architecture is returned with seeded random weights: the
    baseline that shows what training added.
    """
    spec, weights = read_backbone(checkpoint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(spec["name"], pretrained=False, num_classes=0, **spec["kwargs"])
    if not random_init:
        model.load_state_dict(weights, strict=True)
    return model.eval()
