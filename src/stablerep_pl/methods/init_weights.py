"""Starting a run from weights in a file: `--model.init_args.init_weights PATH` (a start, not a resume).

Three kinds of file, all read without running code from them (`models/safe_load.py`):

- our Lightning checkpoints (`.ckpt`: `state_dict` in our names);
- the authors' training checkpoints (`epoch_last.pth`: `model` in their names, mapped by
  `models/authors_format.py`);
- `stablerep export` files (`.safetensors`: the timm-named backbone, mapped to `backbone.model.*`).

`BaseMethod.configure_model` copies the weights into the module once per process, before the strategy
wraps it (DDP, FSDP); optimiser, schedule and step count start fresh, and a `--ckpt_path` resume,
restored after `configure_model`, overrides them. A load that would leave part of the model at its
random init, or part of the file unused, is refused with the names unless `strict=False` (for example
a backbone-only `.safetensors` into a full StableRep); a shape mismatch is always an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from stablerep_pl.models.authors_format import authors_layout, authors_to_ours, is_authors_checkpoint
from stablerep_pl.models.safe_load import checkpoint_path, load_checkpoint

BACKBONE_PREFIX = "backbone.model."


class InitWeightsError(ValueError):
    """The file does not fit the model (missing, unexpected or differently shaped weights)."""


@dataclass
class InitWeightsReport:
    """Which of the module's tensors came from which file."""

    path: str
    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"init_weights: loaded {len(self.loaded)} of the model's "
            f"{len(self.loaded) + len(self.missing)} tensors from {self.path} ({self.source})"
        )
        if self.missing:
            text += f"; left at their initial values: {grouped(self.missing)}"
        if self.unexpected:
            text += f"; in the file but not in the model: {grouped(self.unexpected)}"
        return text


def grouped(names: list[str], limit: int = 6) -> str:
    """`head.mlp.* (16), logit_scale`: names counted by their first two parts (a lone name in full)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(".".join(name.split(".")[:2]), []).append(name)
    parts = [f"{prefix}.* ({len(g)})" if len(g) > 1 else g[0] for prefix, g in groups.items()]
    return ", ".join(parts[:limit]) + (f", … {len(parts) - limit} more groups" if len(parts) > limit else "")


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The file's weights in our module's names, and what kind of file it was."""
    path = checkpoint_path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(path))
        return {BACKBONE_PREFIX + k: v for k, v in weights.items()}, "exported backbone (safetensors)"
    checkpoint = load_checkpoint(path)
    if is_authors_checkpoint(checkpoint):
        layout = authors_layout(checkpoint, str(path))
        kind = "StableRep+" if layout.language else "StableRep"
        return authors_to_ours(checkpoint["model"]), f"the authors' {kind} checkpoint, {layout.timm_name}"
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        return dict(checkpoint["state_dict"]), "Lightning checkpoint"
    raise InitWeightsError(
        f"{path} is neither a Lightning checkpoint (a 'state_dict'), an authors' checkpoint (a 'model' "
        "with visual.* weights) nor a .safetensors export"
    )


def load_init_weights(module: nn.Module, path: str | Path, strict: bool = True) -> InitWeightsReport:
    """Copy the weights of `path` into `module` (see the module docstring); returns what was loaded."""
    weights, source = read_weights(path)
    own = module.state_dict()
    report = InitWeightsReport(str(path), source)
    report.missing = [k for k in own if k not in weights]
    report.unexpected = [k for k in weights if k not in own]
    report.loaded = [k for k in own if k in weights]
    shapes = [
        f"{k} {tuple(weights[k].shape)} (model {tuple(own[k].shape)})"
        for k in report.loaded
        if weights[k].shape != own[k].shape
    ]
    if shapes:
        raise InitWeightsError(
            f"{path} ({source}): {len(shapes)} weights have other shapes than the model's: {'; '.join(shapes[:4])}"
        )
    if not report.loaded:
        raise InitWeightsError(f"{path} ({source}): no weight name matches the model ({report.summary()})")
    if strict and (report.missing or report.unexpected):
        raise InitWeightsError(
            f"{path} ({source}) does not match the model: {len(report.missing)} missing "
            f"({grouped(report.missing) or 'none'}), {len(report.unexpected)} unexpected "
            f"({grouped(report.unexpected) or 'none'}); to load only the {len(report.loaded)} matching "
            "tensors set init_weights_strict: false (--model.init_args.init_weights_strict false)"
        )
    module.load_state_dict({k: weights[k] for k in report.loaded}, strict=False)
    _check_text_activation(module, source)
    rank_zero_info(report.summary())
    return report


def _check_text_activation(module: nn.Module, source: str) -> None:
    """The authors' text tower uses QuickGELU, which weights cannot show: warn if ours does not."""
    text = getattr(module, "text_encoder", None)
    quick = text is not None and any(type(m).__name__ == "QuickGELU" for m in text.modules())
    if "authors'" in source and text is not None and not quick:
        warnings.warn(
            "the authors' text tower uses QuickGELU; set text_encoder activation: quick_gelu "
            "to compute what their weights were trained with",
            stacklevel=3,
        )
