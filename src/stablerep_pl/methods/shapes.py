"""Batch layout and feature width, shared by every method (kept out of `base.py` to keep it short)."""

from __future__ import annotations

import torch
from torch import nn


def views_first(images: torch.Tensor) -> torch.Tensor:
    """`[n, m, C, H, W]` → view-major `[m * n, C, H, W]` (rows k·n … k·n+n−1 are view k)."""
    if images.ndim != 5:
        raise ValueError(f"expected images [n, m, C, H, W], got shape {tuple(images.shape)}")
    n, m = images.shape[:2]
    return images.transpose(0, 1).reshape(m * n, *images.shape[2:])


def infer_feature_dim(backbone: nn.Module) -> int:
    """Feature width from `num_features` (timm) or `feature_dim`; fails clearly otherwise."""
    for attr in ("num_features", "feature_dim"):
        value = getattr(backbone, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"{type(backbone).__name__} has no integer `num_features`/`feature_dim`; "
        "wrap it in stablerep_pl.models.TimmBackbone or set the attribute"
    )
