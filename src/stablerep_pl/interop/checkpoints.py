"""Backbones out of checkpoint files: what `stablerep export` writes and `stablerep probe` loads.

Three kinds of file, each read without running code from it (`models/safe_load.py`):
- our Lightning checkpoints: `BaseMethod.on_save_checkpoint` records the timm name and constructor
  arguments, so the checkpoint alone rebuilds the backbone;
- the authors' `epoch_last.pth`: the timm name comes from `args.model`, checked against the shapes
  (`models/authors_format.py`);
- `stablerep export` files (`.safetensors`): the timm name in the metadata, the arguments in the
  `PATH.json` written beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from stablerep_pl.models.authors_format import authors_layout, is_authors_checkpoint
from stablerep_pl.models.safe_load import checkpoint_path, load_checkpoint

PREFIX = "backbone.model."
AUTHORS_PREFIX = "visual."


def read_backbone(checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`({"name", "kwargs"}, timm-named weights)` of the backbone in a checkpoint or export."""
    path = checkpoint_path(checkpoint)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return backbone_of(load_checkpoint(path), path)


def backbone_of(ckpt: Any, source: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`read_backbone` of an already loaded checkpoint (ours or the authors')."""
    if is_authors_checkpoint(ckpt):
        layout = authors_layout(ckpt, str(source))
        state = ckpt["model"]
        weights = {k[len(AUTHORS_PREFIX) :]: v for k, v in state.items() if k.startswith(AUTHORS_PREFIX)}
        return {"name": layout.timm_name, "kwargs": layout.backbone_kwargs()}, weights
    if not isinstance(ckpt, dict):
        raise ValueError(f"{source} is not a checkpoint dictionary")
    spec = ckpt.get("timm_backbone")
    if spec is None:
        raise ValueError(f"{source} has no timm backbone record (was it trained with TimmBackbone?)")
    weights = {k[len(PREFIX) :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(PREFIX)}
    if not weights:
        raise ValueError(f"{source} holds no '{PREFIX}*' weights")
    return spec, weights


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    sidecar = path.with_name(path.name + ".json")
    info = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    name = info.get("name") or metadata.get("timm_name")
    if not name:
        raise ValueError(f"{path} names no timm model (no 'timm_name' metadata and no {sidecar.name})")
    return {"name": name, "kwargs": info.get("kwargs", {})}, load_file(str(path))


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
