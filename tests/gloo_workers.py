"""Real 2-process gloo groups for tests: launch worker scripts, and the worker-side boilerplate.

A worker script is called as `python WORKER RANK WORLD INIT_FILE [EXTRA ...] OUT_DIR`, joins a gloo
group through the file store, computes, and saves its results to `OUT_DIR/rank{RANK}.pt`; the test
loads every rank's file. Each rank is its own process, forked from the forkserver of
`stablerep_pl.cli.launch`, which imported torch, Lightning and the package once per test process: a
fresh interpreter per rank spent about 5 s importing them, for a second of work. A fork shares
nothing with other ranks, other launches or the test process beyond those imports.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from stablerep_pl.cli import launch


def run_gloo_workers(
    script: Path, out_dir: Path, extra_args: Sequence[str] = (), world: int = 2, timeout: float = 300
) -> list[Any]:
    """Run `world` ranks of `script`; fail the test with their output if any rank fails."""
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    init_file = out_dir / "store"
    processes = []
    for rank in range(world):
        argv = [str(rank), str(world), str(init_file), *extra_args, str(out_dir)]
        processes.append(launch.start(argv, out_dir / f"rank{rank}.log", env=env, script=script))
    try:
        for process in processes:
            process.wait(timeout)
    finally:
        for process in processes:
            process.kill()  # those still running after the timeout
    if any(process.returncode != 0 for process in processes):
        logs = [
            f"exit code {r.returncode}\n" + r.log.read_text(errors="replace")
            for r in processes
            if r.log.exists()
        ]
        pytest.fail(f"{script.name} workers failed:\n" + "\n----\n".join(logs))
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world)]


def gloo_worker_main(compute: Callable[[int, int, list[str]], Any], timeout_s: float = 120) -> None:
    """Worker side: join the group named on the command line, save `compute(rank, world, extra)`."""
    rank, world, init_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    extra, out_dir = sys.argv[4:-1], Path(sys.argv[-1])
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )  # fmt: skip
    try:
        torch.save(compute(rank, world, extra), out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
