"""Random draws of the data pipeline as pure functions of where an item sits in the run.

Why: an item's view choice and augmentation used to come from the worker's global RNG, so they
depended on which worker produced it and on everything drawn before it. After a requeue the
workers restart with fresh RNG states (no data loader saves them), and the resumed run saw other
pixels than the uninterrupted one. Here every item draws from its own seed, derived from the base
seed and the item's coordinates (epoch, index or stream position, rank, worker), so an item is the
same whatever ran before it: mid-epoch resume, worker count and fast-forwarding cannot change it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints and strings (same on every machine and Python run)."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def default_data_seed() -> int:
    """The run's seed: `seed_everything` (LightningCLI's `seed_everything:`) exports it as PL_GLOBAL_SEED."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


@contextlib.contextmanager
def seeded_draws(seed: int) -> Iterator[None]:
    """Run the block on torch's CPU RNG seeded with `seed`, leaving the caller's RNG state untouched.

    torchvision's transforms draw from the global torch RNG and take no generator, so the global
    RNG is forked (about 10 µs) rather than replaced. Only the CPU generator is seeded, the one the
    fork restores: `torch.manual_seed` also queues seeds for CUDA, MPS and XPU with a stack trace
    each (0.65 ms per call here, 17 % of the quickstart's input pipeline at one call per caption)
    and would leave the CUDA seed changed.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
