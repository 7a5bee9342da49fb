"""One rank of the 2-process gloo check of `extract_features_distributed` (run by test_features_distributed.py).

Usage: python features_dist_worker.py RANK WORLD INIT_FILE OUT_DIR (see tests/gloo_workers.py)

The encoder does a `dist.all_reduce` in every forward, as a `fully_shard`ed model all-gathers its
parameters: if one rank runs more forwards than another, the collectives no longer pair up and the
run hangs (here: fails on the group's short timeout). Every rank records how many forwards it ran.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from stablerep_pl.evaluation import extract_features_distributed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gloo_workers import gloo_worker_main

# (items, batch size): uneven shares, fewer items than ranks, and the 513 / 256 case of the issue.
CASES = [(1, 2), (3, 2), (5, 2), (7, 3), (8, 3), (513, 256)]


def build_case(items: int) -> tuple[TensorDataset, torch.Tensor]:
    """The same dataset and encoder weight on every rank and in the test process."""
    g = torch.Generator().manual_seed(items)
    dataset = TensorDataset(torch.randn(items, 4, generator=g), torch.arange(items) * 3 % 5)
    return dataset, torch.randn(4, 3, generator=g)


class CollectiveEncoder:
    """`x @ weight`, with one all-reduce per forward (like FSDP2's parameter all-gather)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight, self.calls = weight, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        dist.all_reduce(torch.ones(1))
        return x @ self.weight


def run() -> dict:
    results = {}
    for items, batch_size in CASES:
        dataset, weight = build_case(items)
        encoder = CollectiveEncoder(weight)
        features, labels = extract_features_distributed(encoder, dataset, batch_size=batch_size)
        results[(items, batch_size)] = {"features": features, "labels": labels, "calls": encoder.calls}
    return results


if __name__ == "__main__":
    gloo_worker_main(lambda rank, world, extra: run(), timeout_s=20)
