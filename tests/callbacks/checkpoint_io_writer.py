"""Saves large checkpoints to one path in a loop until killed (run by test_checkpoint_io.py).

Usage: python checkpoint_io_writer.py {atomic|lightning} TARGET PROGRESS_FILE MEGABYTES

Save i holds `marker = i` and `weights` filled with i; after save i returns, the line `i` is
appended to PROGRESS_FILE, so the test knows the last complete save when it kills this process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from stablerep_pl.callbacks.checkpoint_io import AtomicCheckpointIO


def checkpoint(i: int, megabytes: int) -> dict[str, torch.Tensor]:
    """Save i's content: same size for every i, so a shorter file is a partial write."""
    return {"marker": torch.tensor(i), "weights": torch.full((megabytes * 2**18,), float(i))}


def main() -> None:
    kind, target, progress, megabytes = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    io = AtomicCheckpointIO() if kind == "atomic" else TorchCheckpointIO()
    for i in range(1000):
        io.save_checkpoint(checkpoint(i, megabytes), target)
        with progress.open("a") as file:
            file.write(f"{i}\n")


if __name__ == "__main__":
    main()
