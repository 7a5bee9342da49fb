"""An independent reference of the authors' StableRep / StableRep+ model, losses and checkpoint loading.

Written for these tests from the specification of google-research/syn-rep-learn (StableRep/models/
StableRep.py, StableRepMM.py, losses.py, main_stablerep.py, main_linear.py): the same module tree
and parameter names (`visual`, `image_mlp.layer1/bn1/layer2/bn2/layer3`, the CLIP text tower,
`image_projection`, `text_projection`, `logit_scale`), the same forward (views stacked on channels,
fed view-major, `image_mlp` once per view) and the same loss formulas at world size 1 (self masked
with −1e9, logits shifted by their row max, soft targets). Their `SyncBatchNorm` without a process
group is plain BatchNorm, so `nn.BatchNorm1d` stands in (same state-dict keys). Only the tests use it;
the package's own modules are checked against it.

Deliberate freedoms: `img_size` (their constructors always use 224) and the text tower's width and
depth are arguments, so that the tests run in seconds on a CPU.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

VIT = {"small": ("vit_small_patch16_224", 384), "base": ("vit_base_patch16_224", 768),
       "large": ("vit_large_patch16_224", 1024)}  # fmt: skip


def build_mlp(in_dim: int, mlp_dim: int, out_dim: int) -> nn.Sequential:
    """Their `_build_mlp` / `image_mlp`: Linear, BN, ReLU, Linear, BN, ReLU, Linear (biases, affine BN)."""
    return nn.Sequential(OrderedDict([
        ("layer1", nn.Linear(in_dim, mlp_dim)), ("bn1", nn.BatchNorm1d(mlp_dim)), ("relu1", nn.ReLU(inplace=True)),
        ("layer2", nn.Linear(mlp_dim, mlp_dim)), ("bn2", nn.BatchNorm1d(mlp_dim)), ("relu2", nn.ReLU(inplace=True)),
        ("layer3", nn.Linear(mlp_dim, out_dim)),
    ]))  # fmt: skip


def split_views(img_cat: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """`[B, 3m, H, W]` → view-major `[m·B, 3, H, W]`, B, m (their `torch.split(img_cat, 3, dim=1)`)."""
    augs = torch.split(img_cat, 3, dim=1)
    return torch.cat(augs, dim=0), img_cat.size(0), len(augs)


class VisionEncoder(nn.Module):
    """StableRep: `visual` (timm ViT, num_classes=0) and `image_mlp`, per-view BatchNorm."""

    def __init__(
        self, vision_width: int, vision_model: nn.Module, ssl_mlp_dim: int, ssl_emb_dim: int
    ) -> None:
        super().__init__()
        self.visual = vision_model
        self.image_mlp = build_mlp(vision_width, ssl_mlp_dim, ssl_emb_dim)

    def forward(self, img_cat: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        images, n_caption, n_views = split_views(img_cat)
        feats = torch.split(self.visual(images), n_caption, dim=0)
        h = torch.cat([self.image_mlp(f) for f in feats], dim=0)
        return {"feats": h, "labels": label.view(-1, 1).repeat(n_views, 1).squeeze()}


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP block, sequence-first: x + attn(ln_1(x)), then x + mlp(ln_2(x)); causal additive mask."""

    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))  # fmt: skip
        self.ln_2 = nn.LayerNorm(d_model)
        self.attn_mask = attn_mask  # a plain attribute: not in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask.to(x.dtype))[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTextEncoder(nn.Module):
    """StableRep+: the vision part of `VisionEncoder`, a CLIP text tower, projections, `logit_scale`."""

    def __init__(
        self, vision_width: int, vision_model: nn.Module, ssl_mlp_dim: int, ssl_emb_dim: int,
        context_length: int = 77, vocab_size: int = 49408, transformer_width: int = 512,
        transformer_heads: int = 8, transformer_layers: int = 12, vl_projection: str = "linear", embed_dim: int = 512,
    ) -> None:  # fmt: skip
        super().__init__()
        self.context_length, self.vision_width, self.vl_projection = (
            context_length,
            vision_width,
            vl_projection,
        )
        self.visual = vision_model
        self.image_mlp = build_mlp(vision_width, ssl_mlp_dim, ssl_emb_dim)
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, mask)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = nn.LayerNorm(transformer_width)
        if vl_projection == "linear":
            self.image_projection = nn.Parameter(torch.empty(vision_width, embed_dim))
            self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        elif vl_projection == "mlp":
            self.image_projection = build_mlp(vision_width, ssl_mlp_dim, ssl_emb_dim)
            self.text_projection = build_mlp(transformer_width, ssl_mlp_dim, ssl_emb_dim)
        else:
            raise ValueError(vl_projection)
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std, attn_std, fc_std = width**-0.5 * (2 * layers) ** -0.5, width**-0.5, (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        if self.vl_projection == "linear":
            nn.init.normal_(self.image_projection, std=self.vision_width**-0.5)
            nn.init.normal_(self.text_projection, std=width**-0.5)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)]

    def project(self, projection: Any, feat: torch.Tensor) -> torch.Tensor:
        return feat @ projection if self.vl_projection == "linear" else projection(feat)

    def forward(
        self, img_cat: torch.Tensor, label: torch.Tensor, text: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        images, n_caption, n_views = split_views(img_cat)
        feats = torch.split(self.visual(images), n_caption, dim=0)
        h = torch.cat([self.image_mlp(f) for f in feats], dim=0)
        h_emb = torch.cat([self.project(self.image_projection, f) for f in feats], dim=0)
        label = label.view(-1, 1)
        return {
            "image_feats": h, "image_emb": h_emb, "image_labels": label.repeat(n_views, 1).squeeze(),
            "text_emb": self.project(self.text_projection, self.encode_text(text)), "text_labels": label,
            "logit_scale": self.logit_scale.exp(),
        }  # fmt: skip


def vit(size: str, img_size: int) -> tuple[nn.Module, int]:
    name, width = VIT[size]
    return timm.create_model(name, num_classes=0, img_size=img_size), width


def stablerep(
    size: str = "small", img_size: int = 32, ssl_mlp_dim: int = 64, ssl_emb_dim: int = 16
) -> VisionEncoder:
    visual, width = vit(size, img_size)
    return VisionEncoder(width, visual, ssl_mlp_dim, ssl_emb_dim)


def stablerep_mm(
    size: str = "small", img_size: int = 32, ssl_mlp_dim: int = 64, ssl_emb_dim: int = 16,
    vl_projection: str = "linear", transformer_width: int = 64, transformer_layers: int = 2, embed_dim: int = 32,
) -> VisionTextEncoder:  # fmt: skip
    visual, width = vit(size, img_size)
    return VisionTextEncoder(
        width, visual, ssl_mlp_dim, ssl_emb_dim, transformer_width=transformer_width,
        transformer_layers=transformer_layers, vl_projection=vl_projection, embed_dim=embed_dim,
    )  # fmt: skip


# ---- losses (world size 1) ----
def cross_entropy(p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return -torch.sum(p * F.log_softmax(logits, dim=-1), dim=-1).mean()


def stabilize(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.max(dim=-1, keepdim=True)[0].detach()


def image_loss(feats: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    feats = F.normalize(feats, dim=-1, p=2)
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).float()
    logits_mask = 1.0 - torch.eye(len(labels))
    mask = mask * logits_mask
    logits = feats @ feats.T / temperature - (1 - logits_mask) * 1e9
    p = mask / mask.sum(1, keepdim=True).clamp(min=1.0)
    return cross_entropy(p, stabilize(logits))


def multipos_con_loss(outputs: dict[str, torch.Tensor], temperature: float = 0.1) -> dict[str, torch.Tensor]:
    """Their `MultiPosConLoss` on `{'feats', 'labels'}`."""
    loss = image_loss(outputs["feats"], outputs["labels"], temperature)
    return {"loss": loss, "image_loss": loss}


def multipos_con_loss_mm(
    outputs: dict[str, torch.Tensor], temperature: float = 0.1, w1: float = 1.0, w2: float = 1.0
) -> dict[str, torch.Tensor]:
    """Their `MultiPosConLossMM`: w1 · image loss + w2 · (image→text + text→image) / 2."""
    v = F.normalize(outputs["image_emb"], dim=-1, p=2)
    t = F.normalize(outputs["text_emb"], dim=-1, p=2)
    v_labels, t_labels = outputs["image_labels"].view(-1, 1), outputs["text_labels"].view(-1, 1)
    scale = outputs["logit_scale"]
    v_mask = torch.eq(v_labels, t_labels.view(1, -1)).float()
    t_mask = torch.eq(t_labels, v_labels.view(1, -1)).float()
    p_v = v_mask / v_mask.sum(1, keepdim=True).clamp(min=1.0)
    p_t = t_mask / t_mask.sum(1, keepdim=True).clamp(min=1.0)
    img_txt = (cross_entropy(p_v, scale * v @ t.T) + cross_entropy(p_t, scale * t @ v.T)) / 2
    img = image_loss(outputs["image_feats"], outputs["image_labels"], temperature)
    return {"loss": w1 * img + w2 * img_txt, "image_loss": img, "img_txt_loss": img_txt}


# ---- their files ----
def add_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "bias" in n or "ln" in n or "bn" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}]


def save_training_checkpoint(model: nn.Module, path: Path, args: argparse.Namespace, epoch: int = 14) -> None:
    """`epoch_last.pth` as `main_stablerep.py` writes it, after one AdamW step (a real optimizer state)."""
    optimizer = torch.optim.AdamW(add_weight_decay(model, 0.1), lr=1e-3, betas=(0.9, 0.98))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad()
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 0}  # GradScaler.state_dict() on CUDA: plain floats and ints  # fmt: skip
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "scaler": scaler, "args": args}, path)  # fmt: skip


def training_args(**overrides: Any) -> argparse.Namespace:
    """The Namespace `main_stablerep.py` saves (the fields that matter here, their defaults)."""
    values = dict(
        model="small", add_language=False, tokenizer="CLIP", ssl_mlp_dim=64, ssl_emb_dim=16, ssl_temp=0.1,
        ssl_w1=1.0, ssl_w2=1.0, vl_projection="linear", epochs=15, lr=3.2e-3, blr=2e-4, beta1=0.9, beta2=0.98,
        weight_decay=0.1, warmup_epochs=0.5, batch_size=4, n_img=3, down_res=[64, 128], down_prob=None,
        output_dir="./output", distributed=False, rank=0, world_size=1, gpu=0,
    )  # fmt: skip
    return argparse.Namespace(**{**values, **overrides})


def main_linear_load(path: Path, model_size: str, num_classes: int = 10) -> nn.Module:
    """Their `main_linear.py` loading lines: keep `visual.*` minus the prefix, build the timm ViT at 224,
    `load_state_dict(strict=False)`, and assert only the classifier is missing. (`weights_only=False`:
    what `torch.load` did on their torch 1.11; the file is one the test wrote.)"""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state_dict = checkpoint["model"]
    prefix = "visual."
    for k in list(state_dict.keys()):
        if k.startswith(prefix) and not k.startswith(prefix + "head"):
            state_dict[k[len("visual.") :]] = state_dict[k]
        del state_dict[k]
    model = timm.create_model(f"vit_{model_size}_patch16_224", num_classes=num_classes)
    msg = model.load_state_dict(state_dict, strict=False)
    assert set(msg.missing_keys) == {"head.weight", "head.bias"}, msg
    return model
