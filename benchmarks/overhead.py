"""Lightning's per-step cost against a bare PyTorch loop, where it can show: a tiny model, short steps.

    python benchmarks/overhead.py                    # one process
    python benchmarks/overhead.py --ddp              # 2 CPU processes (gloo), DDP in both loops

Both loops train the same StableRep module (a tiny MLP backbone, per-view head, multi-positive loss)
on one fixed in-memory batch with the same AdamW + warmup/cosine schedule. The Lightning loop uses the
shipped trainer settings of configs/quickstart.yaml (TensorBoard logger, logging every 10 steps, the
lr monitor, image throughput monitor, checkpointing, ExactResume, run summary, progress bar), minus
the probes. Repeats alternate bare and Lightning; each reports its median step time; the overhead is
the difference of medians, and the ratio is given both as measured and at a 100 ms step (a realistic
GPU step), where only the added milliseconds matter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stablerep_pl.callbacks import ExactResume, ImageThroughputMonitor, RunSummary
from stablerep_pl.methods import StableRep
from stablerep_pl.methods.optim import OptimConfig, build_adamw, warmup_cosine_factor

N, M, SIZE = 16, 2, 8  # captions, views, pixels: a step of a few milliseconds


class TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net, self.num_features = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 64)), 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SameBatch(Dataset):
    def __init__(self, batch: dict, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return self.batch


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.starts.append(time.perf_counter())


def make_module(seed: int) -> StableRep:
    torch.manual_seed(seed)
    return StableRep(TinyBackbone(), head_hidden_dim=64, head_out_dim=32, optim=OptimConfig(lr=1e-3))


def make_batch(rank: int) -> dict:
    g = torch.Generator().manual_seed(rank)
    return {
        "images": torch.randn(N, M, 3, SIZE, SIZE, generator=g),
        "caption_ids": torch.arange(N) + rank * N,
    }


def bare(steps: int, rank: int, world: int) -> float:
    """Median step time of forward, backward, AdamW, schedule (DDP-wrapped when distributed)."""
    module = make_module(0)
    model = nn.parallel.DistributedDataParallel(module) if world > 1 else module
    optimizer = build_adamw(module, module.optim, 1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine_factor(s, 5, steps))
    batch, times = make_batch(rank), []
    for _ in range(steps):
        start = time.perf_counter()
        loss = (
            model.module.compute_losses(batch)["loss"] if world > 1 else model.compute_losses(batch)["loss"]
        )
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def lightning(steps: int, rank: int, world: int, root: Path) -> float:
    """Median batch-to-batch time of Trainer.fit with the quickstart's trainer settings."""
    clock = StepClock()
    callbacks = [LearningRateMonitor(logging_interval="step"), ImageThroughputMonitor(), ExactResume(),
                 ModelCheckpoint(dirpath=root / "ckpt", save_last=True), RunSummary(), clock]  # fmt: skip
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto",
        precision="32-true", log_every_n_steps=10, logger=TensorBoardLogger(root, name="overhead"),
        callbacks=callbacks, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    data = DataLoader(SameBatch(make_batch(trainer.global_rank), steps), batch_size=None)
    trainer.fit(make_module(0), train_dataloaders=data)
    gaps = [b - a for a, b in zip(clock.starts, clock.starts[1:])]
    return statistics.median(gaps[5:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ddp", action="store_true", help="2 processes (gloo) instead of one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = 2 if args.ddp else 1
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    results: dict[str, list[float]] = {"bare": [], "lightning": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            results["lightning"].append(lightning(args.steps, 0, world, Path(tmp) / f"r{repeat}"))
            rank = dist.get_rank() if dist.is_initialized() else 0
            results["bare"].append(bare(args.steps, rank, world))
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    bare_ms, pl_ms = (1000 * statistics.median(results[k]) for k in ("bare", "lightning"))
    added = pl_ms - bare_ms
    print(f"{'ddp 2 processes' if args.ddp else 'one process'}: bare {bare_ms:.2f} ms/step, Lightning "
          f"{pl_ms:.2f} ms/step (medians of {args.repeats} interleaved repeats × {args.steps} steps)")  # fmt: skip
    print(f"added per step: {added:.2f} ms; ratio {pl_ms / bare_ms:.3f}× here, {(100 + added) / 100:.3f}× at a "
          "100 ms step")  # fmt: skip
    print("every run:", {k: [round(1000 * v, 2) for v in vs] for k, vs in results.items()})
    sys.stdout.flush()


if __name__ == "__main__":
    main()
