"""Fixtures for the multi-process `stablerep fit` tests: launch the CLI, read rank records, recompute
the first step in one process.

Runs go through `stablerep fit ... --trainer.devices 2 --trainer.accelerator cpu` (rank 0 forked by
`stablerep_pl.cli.launch`), so Lightning's own launcher starts the second rank as it would for a
user: `python -m stablerep_pl.cli.__main__ fit ...` (gloo on CPU). The
child processes get a clean environment (no inherited SLURM/torchrun variables, one thread each) and
`tests/distributed` on PYTHONPATH for the `rank_recorder.RankRecorder` callback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from stablerep_pl.cli import StableRepCLI, launch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "GROUP_RANK")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))}
    for key in _LAUNCHER_ENV:
        env.pop(key, None)
    pythonpath = os.pathsep.join([str(HERE), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env | {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="session")
def launch_fit() -> Callable[[list[str], Path], str]:
    """Run `stablerep fit ARGS` in `workdir` (a fork of `launch`'s warm server, in its own process
    group); return its output (both streams, both ranks), or fail with it."""

    def run(args: list[str], workdir: Path, timeout: float = 300) -> str:
        process = launch.start(["fit", *args], workdir / "launch_fit.log", cwd=workdir, env=_clean_env(),
                               inherit_env=False, new_session=True)  # fmt: skip
        if process.wait(timeout) is None:
            process.kill()  # the launcher's child rank is in the same process group
            pytest.fail(f"`stablerep fit` timed out after {timeout} s\n{process.log.read_text()[-8000:]}")
        out = process.log.read_text()
        if process.returncode != 0:
            pytest.fail(f"`stablerep fit` failed ({process.returncode})\n{out[-11000:]}")
        return out

    return run


@pytest.fixture(scope="session")
def overrides() -> Callable[[Path], Path]:
    """A third --config: light callbacks (no probes), the recorder, checkpoints and logs in `workdir`."""

    def write(workdir: Path) -> Path:
        config = {
            "trainer": {
                "default_root_dir": str(workdir),
                "logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": str(workdir / "runs"), "name": "dist"},
                },
                "callbacks": [
                    {"class_path": "stablerep_pl.callbacks.TorchThreads", "init_args": {"num_threads": 1}},
                    {
                        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                        "init_args": {"dirpath": str(workdir / "ckpt"), "save_last": True},
                    },
                    {
                        "class_path": "rank_recorder.RankRecorder",
                        "init_args": {"out_dir": str(workdir / "records")},
                    },
                ],
            }
        }
        path = workdir / "overrides.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.fixture(scope="session")
def read_records() -> Callable[[Path], list[dict]]:
    """The two ranks' `RankRecorder` files of a run in `workdir`."""

    def read(workdir: Path, world: int = 2) -> list[dict]:
        return [torch.load(workdir / "records" / f"rank{r}.pt", weights_only=False) for r in range(world)]

    return read


@pytest.fixture(scope="session")
def first_step_in_one_process() -> Callable[[list[dict], list[str]], tuple[torch.Tensor, dict]]:
    """The first step's loss and gradients of one process on the ranks' batches concatenated.

    The model is built from the same config (`config_args`) and loaded with rank 0's initial weights;
    the global batch is rank 0's captions then rank 1's, which is the order of the cross-rank gather.
    """

    def compute(
        records: list[dict], config_args: list[str], dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        args = [*config_args, "--trainer.logger=false", "--trainer.callbacks=[]",
                "--trainer.enable_checkpointing=false", "--trainer.devices=1", "--trainer.strategy=auto",
                "--trainer.sync_batchnorm=false", "--trainer.plugins=null"]  # fmt: skip
        model = StableRepCLI(args=args, run=False).model
        model.load_state_dict(records[0]["initial_state"])
        model.to(dtype).train()
        batch = {
            key: torch.cat([r["first_batch"][key] for r in records]) for key in records[0]["first_batch"]
        }
        batch["images"] = batch["images"].to(dtype)
        loss = model.compute_losses(batch)["loss"]
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads

    return compute
