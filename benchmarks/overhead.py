"""Lightning's per-step cost against a bare PyTorch loop, where it can show: a tiny model, short steps.

    python benchmarks/overhead.py                    # one process
    python benchmarks/overhead.py --ddp              # 2 CPU processes (gloo), DDP in both loops
    python benchmarks/overhead.py --ddp --breakdown  # also Lightning without each piece, to attribute it

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
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stablerep_pl.callbacks import ExactResume, ImageThroughputMonitor, RunSummary
from stablerep_pl.methods import StableRep, step_stats
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


class LossOf(nn.Module):
    """`forward(batch)` = the module's loss, so DDP's forward runs and its gradient all-reduce fires
    (calling `compute_losses` on `ddp.module` would skip the reducer: no gradient sync at all)."""

    def __init__(self, module: StableRep) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: dict) -> torch.Tensor:
        return self.module.compute_losses(batch)["loss"]


def bare(steps: int, rank: int, world: int) -> float:
    """Median step time of forward, backward, AdamW, schedule (through DDP when distributed)."""
    module = make_module(0)
    model = nn.parallel.DistributedDataParallel(LossOf(module)) if world > 1 else LossOf(module)
    optimizer = build_adamw(module, module.optim, 1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine_factor(s, 5, steps))
    batch, times = make_batch(rank), []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model(batch)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


# What --breakdown drops, one at a time. "step_allreduce" is the step-stats collective (losses, NaN
# flags, skip count in one all-reduce): dropped by letting the method believe it is alone (timing only).
PIECES = ("progress_bar", "logger", "checkpointing", "monitors", "run_summary", "step_allreduce")


def lightning(steps: int, rank: int, world: int, root: Path, without: str | None = None) -> float:
    """Median batch-to-batch time of Trainer.fit with the quickstart's trainer settings, optionally
    without one piece (`PIECES`) to attribute the per-step cost."""
    clock = StepClock()
    pieces = {
        "monitors": [LearningRateMonitor(logging_interval="step"), ImageThroughputMonitor()],
        "checkpointing": [ExactResume(), ModelCheckpoint(dirpath=root / "ckpt", save_last=True)],
        "run_summary": [RunSummary()],
    }
    callbacks = [c for name, group in pieces.items() if name != without for c in group] + [clock]
    if without == "logger":  # the lr monitor refuses a trainer without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    logger = TensorBoardLogger(root, name="overhead") if without != "logger" else False
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto",
        precision="32-true", log_every_n_steps=10, logger=logger, callbacks=callbacks,
        enable_model_summary=False, num_sanity_val_steps=0, enable_progress_bar=without != "progress_bar",
        enable_checkpointing=without != "checkpointing",
    )  # fmt: skip
    data = DataLoader(SameBatch(make_batch(trainer.global_rank), steps), batch_size=None)
    alone = mock.patch.object(step_stats, "world_info", lambda: (0, 1))
    with alone if without == "step_allreduce" else contextlib.nullcontext():
        trainer.fit(make_module(0), train_dataloaders=data)
    gaps = [b - a for a, b in zip(clock.starts, clock.starts[1:])]
    return statistics.median(gaps[5:])


def label(variant: str | None) -> str:
    """Result key of a Lightning run: `lightning`, or `lightning -PIECE` without that piece."""
    return "lightning" if variant is None else f"lightning -{variant}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ddp", action="store_true", help="2 processes (gloo) instead of one")
    parser.add_argument("--breakdown", action="store_true", help=f"also Lightning without each of {PIECES}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = 2 if args.ddp else 1
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    variants = [None, *(PIECES if args.breakdown else ())]
    results: dict[str, list[float]] = {"bare": [], **{label(v): [] for v in variants}}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for variant in variants:
                results[label(variant)].append(
                    lightning(args.steps, 0, world, Path(tmp) / f"r{repeat}-{variant}", variant)
                )
            rank = dist.get_rank() if dist.is_initialized() else 0
            results["bare"].append(bare(args.steps, rank, world))
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    medians = {k: 1000 * statistics.median(v) for k, v in results.items()}
    bare_ms, pl_ms = medians["bare"], medians["lightning"]
    added = pl_ms - bare_ms
    print(f"{'ddp 2 processes' if args.ddp else 'one process'}: bare {bare_ms:.2f} ms/step, Lightning "
          f"{pl_ms:.2f} ms/step (medians of {args.repeats} interleaved repeats × {args.steps} steps)")  # fmt: skip
    print(f"added per step: {added:.2f} ms; ratio {pl_ms / bare_ms:.3f}× here, {(100 + added) / 100:.3f}× at a "
          "100 ms step")  # fmt: skip
    for name in results:
        if name.startswith("lightning -"):
            print(
                f"  {name:<28}{medians[name]:8.2f} ms/step  (the piece costs {pl_ms - medians[name]:+.2f} ms)"
            )
    print("every run:", {k: [round(1000 * v, 2) for v in vs] for k, vs in results.items()})
    sys.stdout.flush()


if __name__ == "__main__":
    main()
