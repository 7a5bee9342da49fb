"""Non-finite losses under DDP and FSDP2: `stablerep fit` on the quickstart in 2 CPU processes (gloo).

The loss is NaN on rank 1 only, at its 2nd step; rank 0's is finite. Both ranks must take the same
decision: "skip" drops the step on both (a rank running backward alone would wait forever in the
gradient all-reduce / reduce-scatter) and the run finishes with identical, finite weights; "stop"
raises on both with the step in the message, and `last.ckpt` holds the finite weights after step 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
DDP = str(ROOT / "configs" / "trainer" / "ddp.yaml")
FULLY_SHARD = str(ROOT / "configs" / "trainer" / "fully_shard.yaml")
TINY = ["--data.init_args.num_captions=64", "--data.init_args.batch_size=8", "--data.init_args.num_workers=0"]
STEPS = 4


def config(workdir: Path, mode: str, strategy: str = DDP) -> list[str]:
    """Light callbacks, every-step checkpoints, and the NaN loss on rank 1's 2nd call."""
    overrides = {
        "trainer": {
            "default_root_dir": str(workdir),
            "logger": False,
            "callbacks": [
                {"class_path": "stablerep_pl.callbacks.TorchThreads", "init_args": {"num_threads": 1}},
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(workdir / "ckpt"),
                        "save_last": True,
                        "every_n_train_steps": 1,
                    },
                },
                {
                    "class_path": "nonfinite_helpers.FinalState",
                    "init_args": {"out_dir": str(workdir / "final")},
                },
            ],
        },
        "model": {
            "init_args": {
                "nonfinite_loss": mode,
                "loss": {"class_path": "nonfinite_helpers.NaNOnCall", "init_args": {"call": 2, "rank": 1}},
            }
        },
    }
    path = workdir / "overrides.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return ["--config", QUICKSTART, "--config", strategy, "--config", str(path), "--trainer.accelerator=cpu",
            "--trainer.devices=2", f"--trainer.max_steps={STEPS}", *TINY]  # fmt: skip


def finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [DDP, FULLY_SHARD], ids=["ddp", "fully_shard"])
def test_skip_is_taken_by_both_ranks_and_the_run_finishes(tmp_path: Path, launch_fit, strategy: str) -> None:
    launch_fit(config(tmp_path, "skip", strategy), tmp_path)
    records = [torch.load(tmp_path / "final" / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for record in records:
        assert record["global_step"] == STEPS and record["skipped_nonfinite_steps"] == 1
        assert finite(record["state"])
    for name, value in records[0]["state"].items():  # FSDP2's shards gathered in full by FinalState
        assert torch.equal(value, records[1]["state"][name]), name


@pytest.mark.slow
def test_stop_is_raised_by_both_ranks_and_the_last_checkpoint_is_good(tmp_path: Path, launch_fit) -> None:
    with pytest.raises(pytest.fail.Exception) as failure:  # launch_fit fails the test with both streams
        launch_fit(config(tmp_path, "stop"), tmp_path)
    message = str(failure.value)
    assert (
        "NonFiniteLossError: non-finite training loss at global step 1 (epoch 0): train/loss on 1 of 2"
        in message
    )
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 1 and finite(last["state_dict"])
    assert not (tmp_path / "final").exists()  # no rank finished training
