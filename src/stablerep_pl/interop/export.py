"""`stablerep export CKPT --out backbone.safetensors`: the trained backbone in timm's own naming.

The file loads with
`timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), num_classes=0, **kwargs)`;
name and kwargs are printed and written next to it as `PATH.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from stablerep_pl.interop.checkpoints import read_backbone


def export_backbone(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the backbone weights of a Lightning checkpoint as timm-named safetensors."""
    spec, weights = read_backbone(checkpoint)
    weights = {k: v.contiguous() for k, v in weights.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out), metadata={"timm_name": spec["name"]})
    info = {"name": spec["name"], "kwargs": spec["kwargs"], "file": str(out), "tensors": len(weights)}
    out.with_name(out.name + ".json").write_text(json.dumps(info, indent=2))
    return info
