"""Projection MLP of StableRep with BatchNorm statistics kept per view.

The paper passes each of the m images of a caption through the head separately, so BatchNorm never
mixes statistics of different views (mixing lets the network find positives through batch statistics).
Under DDP, `Trainer(sync_batchnorm=True)` turns these BatchNorms into SyncBatchNorm.

With 3 layers this is exactly the authors' `image_mlp` (and their `vl_projection: mlp`): Linear with
bias, affine BatchNorm (default eps and momentum), ReLU, twice, then a Linear with bias; `mlp.{0,1,3,4,6}`
are their `layer1, bn1, layer2, bn2, layer3` (`models/authors_format.py` maps the names).
"""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Linear → BN → ReLU (× num_layers−1) → Linear; `forward(x, num_views)` normalises per view."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.mlp = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, features: torch.Tensor, num_views: int = 1) -> torch.Tensor:
        """`features` is view-major `[num_views * n, in_dim]`; each block of n rows gets its own BN batch."""
        if features.shape[0] % num_views:
            raise ValueError(f"{features.shape[0]} rows do not split into {num_views} views")
        if num_views == 1:
            return self.mlp(features)
        return torch.cat([self.mlp(chunk) for chunk in features.chunk(num_views)], dim=0)
