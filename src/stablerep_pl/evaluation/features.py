"""Frozen-feature extraction, split across ranks when a process group exists.

Under DDP every rank encodes a strided share of the evaluation set (items rank, rank + W, …), the
shares are gathered, and every rank ends with the full set in dataset order: the same features a
single process computes, for 1/W of the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from stablerep_pl.losses.gather import all_gather_rows, world_info


@torch.no_grad()
def extract_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    progress: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `encode` over `(image, label)` items; returns float32 features `[N, D]` and labels `[N]`."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    features, labels = [], []
    for images, targets in tqdm(loader, desc=progress, disable=progress is None, leave=False):
        features.append(encode(images.to(device, non_blocking=True)).float().cpu())
        labels.append(torch.as_tensor(targets))
    if not features:
        raise ValueError("cannot extract features from an empty dataset")
    return torch.cat(features), torch.cat(labels).long()


@torch.no_grad()
def extract_features_distributed(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_features` with the work split across ranks; every rank returns all of it, in order."""
    rank, world = world_info()
    if world == 1:
        return extract_features(encode, dataset, device, batch_size, num_workers)
    indices = list(range(rank, len(dataset), world))
    if indices:
        features, labels = extract_features(encode, Subset(dataset, indices), device, batch_size, num_workers)
    else:  # fewer items than ranks: this rank contributes nothing but still joins the collectives
        width = _feature_width(encode, dataset, device)
        features, labels = torch.empty(0, width), torch.empty(0, dtype=torch.long)
    # The backend's device (CUDA for NCCL) carries the collective; results come back to the CPU.
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    order = torch.as_tensor(indices, dtype=torch.long)
    gathered = [all_gather_rows(t.to(comm), with_grad=False).cpu() for t in (features, labels, order)]
    features, labels, order = gathered
    permutation = torch.argsort(order)
    return features[permutation], labels[permutation]


def _feature_width(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, device: Any) -> int:
    image, _ = dataset[0]
    return int(encode(image.unsqueeze(0).to(device)).shape[1])


def broadcast_from_rank_zero(value: Any) -> Any:
    """Rank 0's `value` on every rank (any picklable object), so all ranks log the same metric."""
    _, world = world_info()
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
