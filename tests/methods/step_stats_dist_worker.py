"""One rank of the 2-process gloo check of `reduce_step_stats` (run by test_step_stats_distributed.py).

Usage: python step_stats_dist_worker.py RANK WORLD INIT_FILE OUT_DIR (see tests/gloo_workers.py)

Every rank reduces its own losses and skip count; the collectives it issues are counted, and
Lightning's own `sync_dist` reduction of each loss is computed as the reference for the means.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.fabric.utilities.distributed import _sync_ddp

from stablerep_pl.methods.step_stats import reduce_step_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gloo_workers import gloo_worker_main

# Per rank: losses and the batch's `skipped` (None: this rank's data does not report skips).
CASES = {
    "finite": [
        ({"loss": 1.25, "image_loss": 0.5}, 2),
        ({"loss": 0.75, "image_loss": 0.125}, 3),
    ],
    "nan_on_rank1": [
        ({"loss": 1.5, "image_loss": 0.5}, 2),
        ({"loss": float("nan"), "image_loss": 0.25}, None),
    ],
    "inf_everywhere": [
        ({"loss": float("inf"), "image_loss": 1.0}, None),
        ({"loss": float("-inf"), "image_loss": float("nan")}, None),
    ],
}


def counted(name: str, calls: list[str]):
    original = getattr(dist, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    return wrapper


def run(rank: int) -> dict:
    results = {}
    for case, per_rank in CASES.items():
        values, skipped = per_rank[rank]
        losses = {k: torch.tensor(v) for k, v in values.items()}
        calls: list[str] = []
        originals = {n: getattr(dist, n) for n in ("all_reduce", "all_gather", "barrier", "broadcast")}
        for name in originals:
            setattr(dist, name, counted(name, calls))
        try:
            stats = reduce_step_stats(losses, None if skipped is None else torch.tensor(skipped))
        finally:
            for name, fn in originals.items():
                setattr(dist, name, fn)
        lightning = {k: _sync_ddp(v.clone(), reduce_op="mean") for k, v in losses.items()}
        results[case] = {"stats": stats, "calls": calls, "lightning": lightning}
    return results


if __name__ == "__main__":
    gloo_worker_main(lambda rank, world, extra: run(rank), timeout_s=30)
