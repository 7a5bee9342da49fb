"""The authors' StableRep / StableRep+ checkpoints in and out of our modules.

`load_authors_checkpoint` turns their `epoch_last.pth` into our `StableRep` or `StableRepPlus` with
every weight in place (backbone, projection head, text tower, projections, logit scale) and their loss
settings (`ssl_temp`, `ssl_w1`, `ssl_w2`), so that `compute_losses` equals their model + loss on the
same batch. `export_authors_checkpoint` writes one of our runs in their layout, for their
`main_linear.py` (which reads only `model`: the `visual.*` weights) and their code in general.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from stablerep_pl.interop.run_info import run_config
from stablerep_pl.methods import StableRep, StableRepPlus
from stablerep_pl.methods.optim import OptimConfig
from stablerep_pl.models import TextTransformer, TimmBackbone
from stablerep_pl.models.authors_format import (
    AuthorsLayout,
    arg,
    authors_layout,
    authors_size,
    authors_to_ours,
    is_authors_checkpoint,
    ours_to_authors,
)
from stablerep_pl.models.safe_load import load_checkpoint


def build_from_layout(layout: AuthorsLayout, args: Any = None) -> StableRep | StableRepPlus:
    """Our module with the authors' architecture and loss settings (random weights)."""
    backbone = TimmBackbone(layout.timm_name, **layout.backbone_kwargs())
    head = dict(head_hidden_dim=layout.mlp_dim, head_out_dim=layout.emb_dim, head_layers=3)
    common: dict[str, Any] = dict(**head, temperature=layout.temperature, optim=_optim(args))
    if not layout.language:
        return StableRep(backbone, **common)
    assert layout.text is not None and layout.embed_dim is not None and layout.vl_projection is not None
    text = TextTransformer(**layout.text, activation="quick_gelu")
    return StableRepPlus(
        backbone, text, embed_dim=layout.embed_dim, image_text_weight=layout.w2, image_loss_weight=layout.w1,
        projection_type=layout.vl_projection, **common,
    )  # fmt: skip


def _optim(args: Any) -> OptimConfig:
    """Their optimiser settings where `args` has them (absolute lr of their run, betas, decay, warmup)."""
    if args is None or arg(args, "lr") is None:
        return OptimConfig()
    return OptimConfig(
        lr=float(arg(args, "lr")), weight_decay=float(arg(args, "weight_decay", 0.1)),
        betas=(float(arg(args, "beta1", 0.9)), float(arg(args, "beta2", 0.98))),
        warmup_epochs=float(arg(args, "warmup_epochs", 0.5)),
    )  # fmt: skip


def load_authors_checkpoint(path: str | Path) -> StableRep | StableRepPlus:
    """Our LightningModule holding every weight of an authors' checkpoint (strict: nothing left over)."""
    checkpoint = load_checkpoint(path)
    if not is_authors_checkpoint(checkpoint):
        raise ValueError(f"{path} is not an authors' checkpoint (a 'model' dict with visual.* weights)")
    layout = authors_layout(checkpoint, str(path))
    module = build_from_layout(layout, checkpoint.get("args"))
    result = module.load_state_dict(authors_to_ours(checkpoint["model"]), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: our {type(module).__name__} cannot hold it exactly: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return module


def export_authors_checkpoint(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write our Lightning checkpoint as `{'model', 'epoch', 'args'}` in the authors' names.

    No 'optimizer' or 'scaler': our AdamW groups and parameter order are not theirs, and without
    them their `misc.load_model` (`--resume`) loads the weights and starts a fresh optimiser.
    """
    ckpt = load_checkpoint(checkpoint)
    if is_authors_checkpoint(ckpt):
        raise ValueError(f"{checkpoint} is already in the authors' format")
    spec = ckpt.get("timm_backbone") if isinstance(ckpt, dict) else None
    if spec is None or "state_dict" not in ckpt:
        raise ValueError(f"{checkpoint} is not a checkpoint of a stablerep run (no timm backbone record)")
    size = authors_size(spec["name"], spec.get("kwargs", {}))
    model = ours_to_authors(ckpt["state_dict"])
    args = _namespace(size, model, ckpt, checkpoint)
    authors_layout({"model": model, "args": args}, str(out))  # their layout, checked as a reader would
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "epoch": int(ckpt.get("epoch", 0)), "args": args}, out)
    return {"file": str(out), "model": size, "add_language": args.add_language, "tensors": len(model)}


def _namespace(size: str, model: dict[str, torch.Tensor], ckpt: dict[str, Any], source: str | Path) -> Any:
    """Their `args` fields that describe the weights, with our run's loss settings where known."""
    init = {
        **run_config(source)[1].get("model", {}).get("init_args", {}),
        **(ckpt.get("loss_settings") or {}),
    }
    init = {k: v for k, v in init.items() if v is not None}
    language = "token_embedding.weight" in model
    values: dict[str, Any] = {
        "model": size, "add_language": language, "tokenizer": "CLIP",
        "ssl_mlp_dim": int(model["image_mlp.layer1.weight"].shape[0]) if "image_mlp.layer1.weight" in model else None,
        "ssl_emb_dim": int(model["image_mlp.layer3.weight"].shape[0]) if "image_mlp.layer3.weight" in model else None,
        "ssl_temp": float(init.get("temperature", 0.1)), "ssl_w1": float(init.get("image_loss_weight", 1.0)),
        "ssl_w2": float(init.get("image_text_weight", 1.0)),
        "vl_projection": ("linear" if "image_projection" in model else "mlp") if language else "linear",
        "exported_from": str(source), "global_step": int(ckpt.get("global_step", 0)),
    }  # fmt: skip
    return argparse.Namespace(**values)
