"""Non-finite losses in real `Trainer.fit` runs with `ModelCheckpoint(save_last=True)` every step.

"stop" must raise before the bad step touches any weight, so `last.ckpt` keeps the last good state;
"skip" must drop the step (weights unchanged) and go on, counting it. The data pipeline's count of
skipped corrupt samples (`batch["skipped"]`) is logged as a run total.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, default_collate

from stablerep_pl.methods.optim import OptimConfig
from stablerep_pl.methods.step_stats import NonFiniteLossError

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
from nonfinite_helpers import NaNOnCall
from tiny_fit import Items, Recorder, tiny_model, trainer

OPTIM = OptimConfig(lr=0.05, warmup_steps=0)
NAN_CALL = 4  # the 4th training step (global step 3) has a NaN loss


def checkpointing(directory: Path) -> ModelCheckpoint:
    return ModelCheckpoint(dirpath=directory, save_last=True, every_n_train_steps=1, save_top_k=0)


def logged(logger: CSVLogger, key: str) -> list[float]:
    with open(Path(logger.log_dir) / "metrics.csv") as file:
        return [float(row[key]) for row in csv.DictReader(file) if row.get(key)]


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_stop_raises_and_last_checkpoint_holds_the_last_good_weights(tmp_path: Path) -> None:
    recorder = Recorder()
    model = tiny_model(optim=OPTIM, loss=NaNOnCall(NAN_CALL))
    run = trainer([recorder, checkpointing(tmp_path)], max_steps=10, enable_checkpointing=True)
    with pytest.raises(NonFiniteLossError) as error:
        run.fit(model, train_dataloaders=DataLoader(Items(40), batch_size=4))
    message = str(error.value)
    assert "\n" not in message
    assert "global step 3 (epoch 0): train/loss on 1 of 1 rank(s)" in message
    assert "last checkpoint on disk is the last good state" in message
    assert "nonfinite_loss=skip" in message
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["global_step"] == NAN_CALL - 1
    good = recorder.weights[NAN_CALL - 1]  # after the 3 finite steps
    assert good.keys() == last["state_dict"].keys() and all_finite(last["state_dict"])
    for name, value in last["state_dict"].items():
        assert torch.equal(value, good[name]), name
    assert not torch.equal(good["backbone.net.1.weight"], recorder.weights[0]["backbone.net.1.weight"])


def test_skip_drops_the_step_and_goes_on(tmp_path: Path) -> None:
    recorder, logger = Recorder(), CSVLogger(tmp_path / "logs")
    model = tiny_model(optim=OPTIM, loss=NaNOnCall(NAN_CALL), nonfinite_loss="skip")
    run = trainer([recorder, checkpointing(tmp_path)], max_steps=6, logger=logger, log_every_n_steps=1,
                  enable_checkpointing=True)  # fmt: skip
    run.fit(model, train_dataloaders=DataLoader(Items(40), batch_size=4))
    assert run.global_step == 6 and model.skipped_nonfinite_steps == 1
    skipped = NAN_CALL - 1
    assert all(torch.equal(v, recorder.weights[skipped][k]) for k, v in recorder.weights[skipped + 1].items())
    assert not torch.equal(recorder.weights[skipped + 2]["head.mlp.0.weight"], recorder.weights[skipped]["head.mlp.0.weight"])  # fmt: skip
    assert all(all_finite(state) for state in recorder.weights.values())
    assert all_finite(torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"])
    assert logged(logger, "train/skipped_nonfinite_steps") == [0, 0, 0, 1, 1, 1]
    assert all(map(math.isfinite, logged(logger, "train/loss_step") + logged(logger, "train/loss_epoch")))
    assert (
        torch.load(tmp_path / "last.ckpt", weights_only=False)["skip_counts"]["skipped_nonfinite_steps"] == 1
    )


class NaNImage(Items):
    """Item 13 (in the 4th batch of 4) is a NaN image: NaN activations, BatchNorm statistics too."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        return item | {"images": torch.full_like(item["images"], float("nan"))} if i == 13 else item


def test_skip_of_a_nan_image_leaves_batchnorm_statistics_intact(tmp_path: Path) -> None:
    recorder = Recorder()
    model = tiny_model(optim=OPTIM, nonfinite_loss="skip")
    trainer([recorder], max_steps=5).fit(model, train_dataloaders=DataLoader(NaNImage(40), batch_size=4))
    assert model.skipped_nonfinite_steps == 1
    before, after = recorder.weights[3], recorder.weights[4]
    assert {k for k in before if "running" in k} == {"head.mlp.1.running_mean", "head.mlp.1.running_var"}
    assert all(torch.equal(after[k], before[k]) for k in before)  # buffers included
    assert all(all_finite(state) for state in recorder.weights.values())


def test_skip_with_accumulation_drops_the_whole_step() -> None:
    recorder = Recorder()
    model = tiny_model(optim=OPTIM, loss=NaNOnCall(3), nonfinite_loss="skip")  # 1st batch of step 2
    run = trainer([recorder], max_steps=4, accumulate_grad_batches=2)
    run.fit(model, train_dataloaders=DataLoader(Items(40), batch_size=4))
    assert run.global_step == 4 and model.skipped_nonfinite_steps == 1
    params = [name for name, _ in model.named_parameters()]
    before, after = recorder.weights[1], recorder.weights[2]  # after steps 1 and 2 (the dropped one)
    assert all(torch.equal(after[name], before[name]) for name in params)
    assert not torch.equal(recorder.weights[3]["head.mlp.0.weight"], before["head.mlp.0.weight"])


def test_skipped_samples_are_logged_as_a_run_total(tmp_path: Path) -> None:
    skips = iter([2, 0, 5, 1])

    def collate(items: list[dict]) -> dict:
        return default_collate(items) | {"skipped": torch.tensor(next(skips))}

    logger = CSVLogger(tmp_path)
    model = tiny_model(optim=OPTIM)
    loader = DataLoader(Items(16), batch_size=4, collate_fn=collate)
    trainer([], max_steps=4, logger=logger, log_every_n_steps=1).fit(model, train_dataloaders=loader)
    assert logged(logger, "data/skipped_samples") == [2, 2, 7, 8]
    assert model.skipped_samples == 8 and model.skipped_nonfinite_steps == 0


def test_logged_loss_is_the_step_loss(tmp_path: Path) -> None:
    """One process: the logged step loss is the loss itself, and the epoch value its batch-weighted mean."""
    logger = CSVLogger(tmp_path)
    losses: list[float] = []

    class Keep(Recorder):
        def on_train_batch_end(self, trainer, pl_module, outputs, *args) -> None:
            losses.append(float(outputs["loss"]))

    model = tiny_model(optim=OPTIM)
    trainer([Keep()], max_epochs=1, logger=logger, log_every_n_steps=1).fit(
        model,
        train_dataloaders=DataLoader(Items(10), batch_size=4),  # batches of 4, 4, 2
    )
    assert logged(logger, "train/loss_step") == pytest.approx(losses)
    expected_epoch = (4 * losses[0] + 4 * losses[1] + 2 * losses[2]) / 10
    assert logged(logger, "train/loss_epoch") == pytest.approx([expected_epoch])


def test_nonfinite_loss_option_is_checked() -> None:
    with pytest.raises(ValueError, match="'stop' or 'skip'"):
        tiny_model(nonfinite_loss="ignore")


def test_skip_totals_survive_a_checkpoint() -> None:
    saved, restored = tiny_model(), tiny_model()
    saved.skipped_nonfinite_steps, saved.skipped_samples = 2, 17
    checkpoint: dict = {}
    saved.on_save_checkpoint(checkpoint)
    restored.on_load_checkpoint(checkpoint)
    assert (restored.skipped_nonfinite_steps, restored.skipped_samples) == (2, 17)
    restored.on_load_checkpoint({})  # a checkpoint from before the totals existed
    assert (restored.skipped_nonfinite_steps, restored.skipped_samples) == (0, 0)
