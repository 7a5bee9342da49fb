"""Which of a caption's k images become its m views in a step (shared by every data path)."""

from __future__ import annotations

import torch


def choose_views(available: int, views: int, distinct: bool = True) -> list[int]:
    """m of the k images without replacement (StableRep), or one image m times (SimCLR).

    Uses torch's global RNG, which Lightning seeds per rank, worker and epoch.
    """
    if distinct:
        return torch.randperm(available)[:views].tolist()
    return [int(torch.randint(available, ()))] * views


def check_views(available: int, views: int, distinct: bool = True) -> None:
    """Fail early when m distinct views cannot be drawn from k images."""
    if distinct and not 1 <= views <= available:
        raise ValueError(f"need 1 <= views ({views}) <= images_per_caption ({available})")
