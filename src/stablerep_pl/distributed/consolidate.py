"""Sharded checkpoint folder (FSDP2 via FullyShardStrategy, or FSDPStrategy with `state_dict_type:
sharded`) → one ordinary Lightning checkpoint file.

Why: sharded checkpoints resume only under a sharding strategy, while `stablerep export`, a
single-process resume and most tools want one file. Lightning's own consolidation script knows only
FSDPStrategy's layout (`model`); this one also reads ModelParallelStrategy's (`state_dict`) and turns
optimizer states keyed by parameter name into torch's positional layout, so that `--ckpt_path` resumes
the optimizer too. Everything is loaded into CPU memory.

    python -m stablerep_pl.distributed.consolidate runs/.../checkpoints/last.ckpt [--out last.consolidated.ckpt]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

METADATA_FILE = "meta.pt"  # Lightning's name for the non-tensor part of a sharded checkpoint


def positional_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state keyed by parameter name → keyed by position, in the order of the param groups."""
    groups = state["param_groups"]
    if not groups or not groups[0]["params"] or not isinstance(groups[0]["params"][0], str):
        return state  # already positional
    index: dict[str, int] = {}
    new_groups = []
    for group in groups:
        ids = []
        for name in group["params"]:
            index[name] = len(index)
            ids.append(index[name])
        new_groups.append({**group, "params": ids})
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": new_groups,
    }


def load_sharded_checkpoint(folder: str | Path) -> dict[str, Any]:
    """The whole checkpoint of a sharded folder as one dict in Lightning's single-file layout."""
    folder = Path(folder)
    if not (folder / ".metadata").is_file():
        raise ValueError(f"{folder} is not a sharded (torch.distributed.checkpoint) folder")
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(folder, Path(tmp) / "full.pt")
        checkpoint = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=False)
    meta = folder / METADATA_FILE
    if meta.is_file():
        checkpoint.update(torch.load(meta, map_location="cpu", weights_only=False))
    if "model" in checkpoint:  # FSDPStrategy's layout
        checkpoint["state_dict"] = checkpoint.pop("model")
    names = sorted((k for k in checkpoint if re.fullmatch(r"optimizer_\d+", k)), key=lambda k: int(k[10:]))
    if names:
        checkpoint["optimizer_states"] = [positional_optimizer_state(checkpoint.pop(k)) for k in names]
    return checkpoint


def consolidate(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the consolidated checkpoint (default: FOLDER with `.consolidated` appended) and return its path."""
    folder = Path(folder)
    target = Path(out) if out is not None else folder.with_name(folder.name + ".consolidated")
    torch.save(load_sharded_checkpoint(folder), target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a sharded checkpoint folder (contains .metadata)")
    parser.add_argument("--out", default=None, help="output file (default: FOLDER.consolidated)")
    args = parser.parse_args(argv)
    print(consolidate(args.folder, args.out))


if __name__ == "__main__":
    main()
