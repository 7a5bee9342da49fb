"""Distinct random streams per rank for what runs in the training process itself.

Why: LightningCLI seeds every rank with the same seed, so anything drawing random numbers in the
training process draws the same numbers on every rank. With `num_workers: 0` (the setting for CUDA
generators) every rank augmented its own captions with the same crops, colour jitters and choice of
views, step after step (measured: identical RNG states on both ranks of a 2-process run), and
stochastic layers (drop path) used the same masks everywhere. DataLoader workers are already seeded
per rank by Lightning. Rank 0 keeps its stream, so a single-process run is unchanged.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def rank_seed(base_seed: int, rank: int) -> int:
    """A 63-bit seed mixing the base seed and the rank (rank 0 → the base seed itself)."""
    if rank == 0:
        return base_seed
    digest = hashlib.blake2b(f"{base_seed}/rank/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def decorrelate_ranks(rank: int, world_size: int) -> None:
    """Reseed torch, `random` and NumPy of this process from its rank (no-op alone or on rank 0)."""
    if world_size <= 1 or rank == 0:
        return
    seed = rank_seed(torch.initial_seed(), rank)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
