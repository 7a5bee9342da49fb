"""`stablerep export CKPT --out backbone.safetensors`: the trained backbone in timm's own naming.

The file loads with
`timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), num_classes=0, **kwargs)`;
name and kwargs are printed and written next to it as `PATH.json`, with a model card (`model_card.py`).
The checkpoint may be one of our runs or the authors' `epoch_last.pth`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from stablerep_pl.interop.checkpoints import backbone_of
from stablerep_pl.interop.model_card import write_model_card
from stablerep_pl.models.safe_load import checkpoint_path, load_checkpoint


def export_backbone(
    checkpoint: str | Path, out: str | Path, card: bool = True, license: str = "apache-2.0"
) -> dict[str, Any]:
    """Write the backbone weights of a checkpoint as timm-named safetensors (and a model card)."""
    path = checkpoint_path(checkpoint)
    if path.suffix == ".safetensors":
        raise ValueError(f"{path} is already an exported backbone")
    ckpt = load_checkpoint(path)
    spec, weights = backbone_of(ckpt, path)
    weights = {k: v.contiguous() for k, v in weights.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out), metadata={"timm_name": spec["name"]})
    info = {"name": spec["name"], "kwargs": spec["kwargs"], "file": str(out), "tensors": len(weights)}
    out.with_name(out.name + ".json").write_text(json.dumps(info, indent=2))
    if card:
        info["card"] = str(write_model_card(path, ckpt, spec, out, license))
    return info
