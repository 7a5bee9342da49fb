"""The authors' checkpoint layout (google-research/syn-rep-learn, StableRep) and how it maps onto ours.

Their `epoch_last.pth` / `checkpoint-N.pth` is `{'model', 'optimizer', 'epoch', 'scaler', 'args'}`,
`args` being the `argparse.Namespace` of `main_stablerep.py`. `model` holds (ours in brackets):

- `visual.*`: timm `vit_{small,base,large}_patch16_224`, `num_classes=0` (`backbone.model.*`);
- `image_mlp.{layer1,bn1,layer2,bn2,layer3}`: Linear-BN-ReLU-Linear-BN-ReLU-Linear applied once per
  view, all Linears with bias, BNs affine (`head.mlp.{0,1,3,4,6}` of `ProjectionHead`, same maths);
- StableRep+ only: the CLIP text tower `token_embedding`, `positional_embedding`,
  `transformer.resblocks.N.*`, `ln_final` (`text_encoder.*`, open_clip's names, QuickGELU);
  `image_projection` / `text_projection`, with `vl_projection: linear` matrices applied as `x @ P`
  (`nn.Linear(bias=False)` whose weight is Pᵀ) and with `mlp` the `image_mlp` MLP again
  (`ProjectionHead`, `mlp.{0,1,3,4,6}`); `logit_scale`, log-space (`logit_scale`).

Only names, shapes and arguments live here (the models layer, so that methods can read the format);
building modules from them is `interop/authors.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

# args.model -> (timm name, width, depth); every size uses 16-pixel patches.
VIT_SIZES: dict[str, tuple[str, int, int]] = {
    "small": ("vit_small_patch16_224", 384, 12),
    "base": ("vit_base_patch16_224", 768, 12),
    "large": ("vit_large_patch16_224", 1024, 24),
}
PATCH_SIZE = 16
HEAD_LAYERS = {"layer1": "0", "bn1": "1", "layer2": "3", "bn2": "4", "layer3": "6"}
HEAD_INDICES = {index: name for name, index in HEAD_LAYERS.items()}
TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.")
TEXT_HEADS = 8  # their text tower always has 8 heads, which the weights cannot show
PROJECTIONS = ("image_projection", "text_projection")


@dataclass(frozen=True)
class AuthorsLayout:
    """What an authors' checkpoint holds: enough to build our module with every weight in place."""

    size: str
    timm_name: str
    img_size: int
    mlp_dim: int
    emb_dim: int
    temperature: float = 0.1
    language: bool = False
    vl_projection: str | None = None
    embed_dim: int | None = None
    text: dict[str, int] | None = None  # vocab_size, context_length, width, layers, heads
    w1: float = 1.0
    w2: float = 1.0

    def backbone_kwargs(self) -> dict[str, int]:
        """timm arguments beyond the name: the image size when it is not 224 (tests use small ones)."""
        return {} if self.img_size == 224 else {"img_size": self.img_size}


def is_authors_checkpoint(checkpoint: Any) -> bool:
    """A dict whose `model` entry holds `visual.*` tensors (the shape of their training checkpoints)."""
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    return isinstance(model, dict) and any(isinstance(k, str) and k.startswith("visual.") for k in model)


def arg(args: Any, name: str, default: Any = None) -> Any:
    """`args.name` of a Namespace or dict (their `args`), `default` when absent."""
    if isinstance(args, dict):
        return args.get(name, default)
    return getattr(args, name, default)


def _blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return len(found)


def authors_layout(checkpoint: dict[str, Any], source: str = "checkpoint") -> AuthorsLayout:
    """Architecture of an authors' checkpoint from `args.model`, checked against the tensor shapes."""
    state, args = checkpoint["model"], checkpoint.get("args")
    for key in ("visual.cls_token", "visual.pos_embed", "visual.patch_embed.proj.weight"):
        if key not in state:
            raise ValueError(f"{source}: not a ViT checkpoint of the authors' layout (no {key})")
    width, depth = int(state["visual.cls_token"].shape[-1]), _blocks(state, "visual.blocks.")
    size = arg(args, "model")
    if size is None:  # no args: the size whose width and depth the weights have
        size = next((s for s, (_, w, d) in VIT_SIZES.items() if (w, d) == (width, depth)), None)
        if size is None:
            raise ValueError(f"{source}: no args.model, and width {width} / {depth} blocks is no ViT-S/B/L")
    if size not in VIT_SIZES:
        raise ValueError(f"{source}: args.model={size!r} is not one of {sorted(VIT_SIZES)}")
    name, want_width, want_depth = VIT_SIZES[size]
    if (width, depth) != (want_width, want_depth):
        raise ValueError(
            f"{source}: args.model={size!r} means {name} (width {want_width}, {want_depth} blocks), "
            f"but its visual.* weights have width {width} and {depth} blocks"
        )
    patch = tuple(state["visual.patch_embed.proj.weight"].shape)
    if patch != (width, 3, PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"{source}: patch embedding {patch} is not {name}'s {(width, 3, 16, 16)}")
    tokens = int(state["visual.pos_embed"].shape[1]) - 1
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise ValueError(f"{source}: {tokens} position embeddings are no square grid of patches")
    if "image_mlp.layer1.weight" not in state or "image_mlp.layer3.weight" not in state:
        raise ValueError(f"{source}: no image_mlp.layer1/layer3 weights (the StableRep projection MLP)")
    language = "token_embedding.weight" in state
    if arg(args, "add_language") is not None and bool(arg(args, "add_language")) != language:
        raise ValueError(f"{source}: args.add_language={arg(args, 'add_language')} but text weights "
                         f"are {'present' if language else 'absent'}")  # fmt: skip
    common = dict(
        size=size, timm_name=name, img_size=grid * PATCH_SIZE,
        mlp_dim=int(state["image_mlp.layer1.weight"].shape[0]),
        emb_dim=int(state["image_mlp.layer3.weight"].shape[0]),
        temperature=float(arg(args, "ssl_temp", 0.1)),
    )  # fmt: skip
    if not language:
        return AuthorsLayout(**common)
    return AuthorsLayout(**common, language=True, **_language_layout(state, args, source))


def _language_layout(state: dict[str, torch.Tensor], args: Any, source: str) -> dict[str, Any]:
    if "image_projection" in state:
        kind, embed_dim = "linear", int(state["image_projection"].shape[1])
    elif "image_projection.layer3.weight" in state:
        kind, embed_dim = "mlp", int(state["image_projection.layer3.weight"].shape[0])
    else:
        raise ValueError(f"{source}: text weights without image_projection (linear or mlp)")
    if arg(args, "vl_projection") not in (None, kind):
        raise ValueError(
            f"{source}: args.vl_projection={arg(args, 'vl_projection')!r} but the weights are {kind}"
        )
    vocab_size, width = (int(n) for n in state["token_embedding.weight"].shape)
    text = {
        "vocab_size": vocab_size, "context_length": int(state["positional_embedding"].shape[0]),
        "width": width, "layers": _blocks(state, "transformer.resblocks."), "heads": TEXT_HEADS,
    }  # fmt: skip
    return {
        "vl_projection": kind, "embed_dim": embed_dim, "text": text,
        "w1": float(arg(args, "ssl_w1", 1.0)), "w2": float(arg(args, "ssl_w2", 1.0)),
    }  # fmt: skip


def authors_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their `model` state dict in our module's names; keys of no known part are kept as they are."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head = key.split(".", 2)
        if key.startswith("visual."):
            out["backbone.model." + key[len("visual.") :]] = value
        elif head[0] == "image_mlp" and len(head) == 3 and head[1] in HEAD_LAYERS:
            out[f"head.mlp.{HEAD_LAYERS[head[1]]}.{head[2]}"] = value
        elif key in PROJECTIONS:  # x @ P == Linear(weight=Pᵀ)
            out[key + ".weight"] = value.t().contiguous()
        elif head[0] in PROJECTIONS and len(head) == 3 and head[1] in HEAD_LAYERS:
            out[f"{head[0]}.mlp.{HEAD_LAYERS[head[1]]}.{head[2]}"] = value
        elif key.startswith(TEXT_PREFIXES):
            out["text_encoder." + key] = value
        else:  # logit_scale, and anything unknown (reported as unexpected by the loaders)
            out[key] = value
    return out


def ours_to_authors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our StableRep / StableRep+ state dict in their names; anything they have no place for is an error."""
    out: dict[str, torch.Tensor] = {}
    unplaced = []
    for key, value in state.items():
        parts = key.split(".", 3)
        if key.startswith("backbone.model."):
            out["visual." + key[len("backbone.model.") :]] = value
        elif key.startswith("head.mlp.") and parts[2] in HEAD_INDICES:
            out[f"image_mlp.{HEAD_INDICES[parts[2]]}.{parts[3]}"] = value
        elif key in {p + ".weight" for p in PROJECTIONS}:
            out[parts[0]] = value.t().contiguous()
        elif parts[0] in PROJECTIONS and parts[1] == "mlp" and parts[2] in HEAD_INDICES:
            out[f"{parts[0]}.{HEAD_INDICES[parts[2]]}.{parts[3]}"] = value
        elif key.startswith("text_encoder.") and key[len("text_encoder.") :].startswith(TEXT_PREFIXES):
            out[key[len("text_encoder.") :]] = value
        elif key == "logit_scale":
            out[key] = value
        else:
            unplaced.append(key)
    if unplaced:
        raise ValueError(
            f"{len(unplaced)} weights have no place in the authors' layout (head of another shape, "
            f"another projection or loss parameters?): {', '.join(unplaced[:5])}"
        )
    return out


def authors_size(timm_name: str, timm_kwargs: dict[str, Any]) -> str:
    """`args.model` for one of our backbones, or a clear error: their format holds ViT-S/B/L/16 at 224 only."""
    sizes = {name: size for size, (name, _, _) in VIT_SIZES.items()}
    if timm_name not in sizes:
        raise ValueError(
            f"the authors' format holds only {', '.join(sorted(sizes))} backbones (their main_linear.py "
            f"builds vit_{{small,base,large}}_patch16_224); this checkpoint's is {timm_name}"
        )
    odd = {k: v for k, v in timm_kwargs.items() if (k, v) not in {("img_size", 224), ("patch_size", 16)}}
    odd.pop("drop_path_rate", None)  # changes training, not the weights' shapes
    if odd:
        raise ValueError(
            f"the authors' main_linear.py builds {timm_name} at 224 px with default arguments; this "
            f"backbone was built with {odd}, so its weights would not load there"
        )
    return sizes[timm_name]
