#!/usr/bin/env python
"""Check that a run killed mid-epoch and resumed ends bit-identical to an uninterrupted run.

    python scripts/resume_check.py --steps 12 --kill-after 5 -- --config configs/quickstart.yaml

Everything after `--` is passed to `stablerep fit` (your config and overrides). The script runs
`stablerep fit` three times in `--workdir`: (A) uninterrupted for `--steps` optimizer steps;
(B) the same, SIGKILLed (the whole process group: launcher, DDP ranks, data workers) right after the
checkpoint of step `--kill-after` was written, side by side with A; (C) resumed from B's `last.ckpt` to `--steps`.
Each run is its own process, forked from a server that imported torch and Lightning once
(`stablerep_pl.cli.launch`); its output is in `fit_A.log`, `fit_B.log` and `fit_C.log`. It then
compares every tensor of the final checkpoints with `torch.equal` and, step by step, the caption
ids and loss each step trained on, and prints the first difference if there is one. Exit code 0
means identical. Runs use `--trainer.deterministic=true`; a checkpoint is written every step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from stablerep_pl.cli import launch

HERE = Path(__file__).resolve().parent


class KillAfterCheckpoint(L.Callback):
    """SIGKILLs this process group at the start of the step after `step` (its checkpoint exists then)."""

    def __init__(self, step: int, checkpoint: str) -> None:
        self.step, self.checkpoint = step, Path(checkpoint)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            saved = torch.load(self.checkpoint, map_location="cpu", weights_only=False)["global_step"]
            if saved != self.step:
                raise RuntimeError(f"expected the checkpoint of step {self.step}, found step {saved}")
            os.killpg(os.getpgrp(), signal.SIGKILL)


class StepRecorder(L.Callback):
    """Appends, per optimizer step and rank, the caption ids and a hash of the pixels trained on and
    the loss to `{out}/rank{r}.jsonl`."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        images = batch["images"].detach().cpu().contiguous()
        record = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "caption_ids": batch["caption_ids"].tolist(),
            "pixels": hashlib.sha1(images.numpy().tobytes()).hexdigest(),
            "loss": float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs),
        }
        with open(self.out / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def fit_command(fit_args: list[str], run_dir: Path, steps: int, extra_callbacks: list[dict]) -> list[str]:
    """`stablerep` arguments of one run: the caller's, plus a checkpoint every step and the recorder."""
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "dirpath": str(run_dir / "ckpt"),
            "every_n_train_steps": 1,
            "save_last": True,
            "save_top_k": 0,
        },
    }
    callbacks = [
        checkpoint,
        {"class_path": "resume_check.StepRecorder", "init_args": {"out": str(run_dir / "steps")}},
    ]
    args = ["fit", *fit_args, f"--trainer.max_steps={steps}", "--trainer.deterministic=true",
            f"--trainer.default_root_dir={run_dir}"]  # fmt: skip
    for callback in [*callbacks, *extra_callbacks]:
        args.append(f"--trainer.callbacks+={json.dumps(callback)}")
    return args


def start(command: list[str], cwd: Path, log: Path) -> launch.WarmProcess:
    """A run in its own process group (DDP ranks and data workers die with it), output to `log`."""
    pythonpath = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])  # StepRecorder & co.
    return launch.start(command, log, cwd=cwd, env={"PYTHONPATH": pythonpath}, new_session=True)


def finish(process: launch.WarmProcess, timeout: float, expect_kill: bool = False) -> None:
    """Wait for `process`; raise with its output unless it ended as expected (SIGKILLed or exit 0)."""
    if process.wait(timeout) is None:
        process.kill()
        raise RuntimeError(
            f"`stablerep fit` timed out after {timeout} s; log {process.log}:\n{tail(process.log)}"
        )
    killed = process.returncode == -signal.SIGKILL
    if killed != expect_kill or (not expect_kill and process.returncode != 0):
        raise RuntimeError(
            f"`stablerep fit` exited with {process.returncode}; log {process.log}:\n{tail(process.log)}"
        )


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no output)"


def read_steps(run_dir: Path) -> dict[tuple[int, int], dict]:
    """{(rank, step): record}; a resumed run's records override the killed run's for the same step."""
    steps = {}
    for path in sorted((run_dir / "steps").glob("rank*.jsonl")):
        rank = int(path.stem[4:])
        for line in path.read_text().splitlines():
            record = json.loads(line)
            steps[(rank, record["step"])] = record
    return steps


def compare(reference: Path, resumed: Path) -> list[str]:
    """Differences between two runs' final checkpoints and step records (empty: identical)."""
    problems = []
    a = torch.load(reference / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(resumed / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    if a["global_step"] != b["global_step"]:
        problems.append(f"global_step {a['global_step']} vs {b['global_step']}")
    for name, tensor in a["state_dict"].items():
        other = b["state_dict"].get(name)
        if other is None or not torch.equal(tensor, other):
            problems.append(f"weights differ: {name}")
            break
    steps_a, steps_b = read_steps(reference), read_steps(resumed)
    if steps_a.keys() != steps_b.keys():
        problems.append(f"recorded steps differ: {sorted(set(steps_a) ^ set(steps_b))[:6]}")
    for key in sorted(steps_a):
        if key in steps_b and steps_a[key] != steps_b[key]:
            problems.append(f"rank {key[0]} step {key[1]}: {steps_a[key]} vs {steps_b[key]}")
            break
    return problems


def resume_check(
    fit_args: list[str], workdir: Path, steps: int, kill_after: int, timeout: float = 600
) -> list[str]:
    """Run A (uninterrupted), B (killed after the checkpoint of `kill_after`), C (resumed); compare."""
    if not 0 < kill_after < steps:
        raise ValueError(f"need 0 < kill_after ({kill_after}) < steps ({steps})")
    workdir = workdir.resolve()
    reference, resumed = workdir / "uninterrupted", workdir / "resumed"
    cwd = Path.cwd()  # relative config paths are the caller's
    killer = {"class_path": "resume_check.KillAfterCheckpoint",
              "init_args": {"step": kill_after, "checkpoint": str(resumed / "ckpt" / "last.ckpt")}}  # fmt: skip
    # A and B are independent runs (own folders and process groups), side by side.
    uninterrupted = start(fit_command(fit_args, reference, steps, []), cwd, workdir / "fit_A.log")
    try:
        killed = start(fit_command(fit_args, resumed, steps, [killer]), cwd, workdir / "fit_B.log")
        finish(killed, timeout, expect_kill=True)
    except BaseException:  # report B's failure, not A's wait
        uninterrupted.kill()
        raise
    finish(uninterrupted, timeout)
    resume = [*fit_command(fit_args, resumed, steps, []), f"--ckpt_path={resumed / 'ckpt' / 'last.ckpt'}"]
    finish(start(resume, cwd, workdir / "fit_C.log"), timeout)
    return compare(reference, resumed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps of each run")
    parser.add_argument("--kill-after", type=int, default=5, help="kill after this step's checkpoint")
    parser.add_argument("--workdir", type=Path, default=Path("runs/resume_check"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("fit_args", nargs=argparse.REMAINDER, help="-- then the `stablerep fit` arguments")
    args = parser.parse_args()
    fit_args = args.fit_args[1:] if args.fit_args[:1] == ["--"] else args.fit_args
    args.workdir.mkdir(parents=True, exist_ok=True)
    problems = resume_check(fit_args, args.workdir, args.steps, args.kill_after, args.timeout)
    if problems:
        print("NOT identical:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(
        f"identical: killed after step {args.kill_after}, resumed to step {args.steps}; every weight "
        "equal (torch.equal) and every step trained on the same captions and pixels with the same loss"
    )


if __name__ == "__main__":
    main()
