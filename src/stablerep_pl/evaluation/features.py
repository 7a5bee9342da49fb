"""Frozen-feature extraction, split across ranks when a process group exists.

Under DDP every rank encodes a strided share of the evaluation set (items rank, rank + W, …), the
shares are gathered, and every rank ends with the full set in dataset order: the same features a
single process computes, for 1/W of the work.

Every rank runs the same number of forwards, in batches of the same sizes: under `fully_shard` a
forward is a collective (the parameters' all-gather), so a rank with one forward fewer would hang
the others. Shares differ by at most one item, so the shorter ones are padded with one repeated item
(item 0 for a rank with no items) whose output is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from stablerep_pl.distributed.gather import all_gather_rows, world_info


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
    padded = padded_share(indices, len(dataset), world)
    features, labels = extract_features(encode, Subset(dataset, padded), device, batch_size, num_workers)
    features, labels = features[: len(indices)], labels[: len(indices)]  # drop the padding's outputs
    # The backend's device (CUDA for NCCL) carries the collective; results come back to the CPU.
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    order = torch.as_tensor(indices, dtype=torch.long)
    gathered = [all_gather_rows(t.to(comm), with_grad=False).cpu() for t in (features, labels, order)]
    features, labels, order = gathered
    permutation = torch.argsort(order)
    return features[permutation], labels[permutation]


def padded_share(indices: list[int], num_items: int, world: int) -> list[int]:
    """This rank's items, padded to the longest share (ceil(N / W)) by repeating its last item.

    Equal lengths mean the same number and sizes of batches on every rank. A rank without items
    repeats item 0; an empty dataset stays empty (every rank then fails alike).
    """
    if not num_items:
        return indices
    longest = -(-num_items // world)
    return indices + [indices[-1] if indices else 0] * (longest - len(indices))


def broadcast_from_rank_zero(value: Any) -> Any:
    """Rank 0's `value` on every rank (any picklable object), so all ranks log the same metric."""
    _, world = world_info()
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
