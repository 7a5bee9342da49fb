"""The lr each optimizer step really uses, in small `Trainer.fit` runs, against the formula.

Warmup in epochs is counted in the run's optimizer steps per epoch (after `limit_train_batches` and
`accumulate_grad_batches`); the total is the smaller of `max_steps` and `max_epochs` × that. When
either cannot be known (a loader without length), the run fails before its first step, saying what
to set. The reference below is written out here, independently of `stablerep_pl.methods.optim`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from stablerep_pl.methods import StableRep
from stablerep_pl.methods.optim import OptimConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_fit import Items, Recorder, Stream, TinyBackbone, tiny_model, trainer

PEAK = 0.1


def expected_lrs(steps: range, warmup: int, total: int, min_ratio: float = 0.0) -> list[float]:
    """Linear ramp (s + 1) / warmup, then half a cosine from the peak to min_ratio × peak at `total`."""
    out = []
    for s in steps:
        if s < warmup:
            out.append(PEAK * (s + 1) / warmup)
        else:
            cosine = (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) / 2
            out.append(PEAK * (min_ratio + (1 - min_ratio) * cosine))
    return out


def fit(loader: DataLoader, optim: OptimConfig, **trainer_kwargs) -> Recorder:
    recorder = Recorder()
    trainer(callbacks=[recorder], **trainer_kwargs).fit(tiny_model(optim=optim), train_dataloaders=loader)
    return recorder


def sized(n: int = 24) -> DataLoader:
    return DataLoader(Items(n), batch_size=4)  # 6 batches per epoch


def test_max_steps_only_warms_up_for_the_epochs_asked(capsys: pytest.CaptureFixture) -> None:
    recorder = fit(sized(), OptimConfig(lr=PEAK, warmup_epochs=0.5), max_steps=10)
    assert recorder.lrs == pytest.approx(expected_lrs(range(10), warmup=3, total=10), rel=1e-6)
    assert "10 steps (3 warmup, 6 per epoch)" in capsys.readouterr().out


def test_max_epochs_only() -> None:
    recorder = fit(sized(), OptimConfig(lr=PEAK, warmup_epochs=0.5), max_epochs=2)
    assert recorder.lrs == pytest.approx(expected_lrs(range(12), warmup=3, total=12), rel=1e-6)


def test_both_limits_with_accumulation_and_limited_batches() -> None:
    # 5 of 6 batches per epoch, 2 per step: steps after batches 2, 4 and 5 → 3 steps per epoch.
    # Total min(7, 3 epochs × 3) = 7; warmup 1 epoch = 3 steps (not 1 × 7 / 3 ≈ 2).
    optim = OptimConfig(lr=PEAK, warmup_epochs=1, min_lr_ratio=0.1)
    recorder = fit(
        sized(), optim, max_epochs=3, max_steps=7, accumulate_grad_batches=2, limit_train_batches=5
    )
    assert recorder.lrs == pytest.approx(expected_lrs(range(7), warmup=3, total=7, min_ratio=0.1), rel=1e-6)


def test_unsized_loader_with_max_steps_and_warmup_steps() -> None:
    loader = DataLoader(Stream(10_000), batch_size=4)
    recorder = fit(loader, OptimConfig(lr=PEAK, warmup_epochs=0, warmup_steps=2), max_steps=8)
    assert recorder.lrs == pytest.approx(expected_lrs(range(8), warmup=2, total=8), rel=1e-6)


def test_unsized_loader_gets_its_epoch_length_from_limit_train_batches() -> None:
    loader = DataLoader(Stream(10_000), batch_size=4)
    recorder = fit(loader, OptimConfig(lr=PEAK, warmup_epochs=0.5), max_steps=8, limit_train_batches=4)
    assert recorder.lrs == pytest.approx(expected_lrs(range(8), warmup=2, total=8), rel=1e-6)


def test_unsized_loader_and_max_epochs_fails_before_the_first_step() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match=r"number of training steps is unknown.*set trainer\.max_steps"):
        trainer([recorder], max_epochs=1).fit(
            tiny_model(optim=OptimConfig(lr=PEAK, warmup_steps=2)),
            train_dataloaders=DataLoader(Stream(12), batch_size=4),
        )
    assert recorder.lrs == []


def test_unsized_loader_and_warmup_in_epochs_fails_before_the_first_step() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match=r"optim\.warmup_epochs=0\.5 needs .* set optim\.warmup_steps"):
        trainer([recorder], max_steps=8).fit(
            tiny_model(optim=OptimConfig(lr=PEAK, warmup_epochs=0.5)),
            train_dataloaders=DataLoader(Stream(10_000), batch_size=4),
        )
    assert recorder.lrs == []


def test_a_resumed_run_continues_the_schedule(tmp_path: Path) -> None:
    optim = OptimConfig(lr=PEAK, warmup_epochs=0.5)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    first = Recorder()
    trainer([first, checkpoint], max_steps=4, enable_checkpointing=True).fit(
        tiny_model(optim=optim), train_dataloaders=sized()
    )
    second = Recorder()
    trainer([second], max_steps=10).fit(
        tiny_model(optim=optim), train_dataloaders=sized(), ckpt_path=tmp_path / "last.ckpt"
    )
    assert first.lrs == pytest.approx(expected_lrs(range(10), warmup=3, total=10)[:4], rel=1e-6)
    assert second.lrs == pytest.approx(expected_lrs(range(4, 10), warmup=3, total=10), rel=1e-6)


class NoBatchSize(L.LightningDataModule):
    """A custom data module that does not say how many images a batch holds."""

    def train_dataloader(self) -> DataLoader:
        return sized()


class WithBatchSize(NoBatchSize):
    images_per_batch = 8  # 4 captions × 2 views


def test_scaled_lr_without_images_per_batch_is_an_error() -> None:
    model = tiny_model(optim=OptimConfig(lr=None, base_lr=1e-3))
    with pytest.raises(
        ValueError, match=r"NoBatchSize\) has no `images_per_batch`; add an `images_per_batch`"
    ):
        trainer([], max_steps=2).fit(model, datamodule=NoBatchSize())


def test_absolute_lr_without_images_per_batch_says_batch_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    logger = CSVLogger(tmp_path)
    trainer([], max_steps=2, logger=logger).fit(
        tiny_model(optim=OptimConfig(lr=PEAK)), datamodule=NoBatchSize()
    )
    out = capsys.readouterr().out
    assert "global batch unknown (the data module has no `images_per_batch`)" in out
    assert "peak lr 0.1 (optim.lr, not scaled with the batch)" in out
    hparams = (Path(logger.log_dir) / "hparams.yaml").read_text()
    assert "global_batch_images" not in hparams and "peak_lr: 0.1" in hparams


def test_scaled_lr_uses_images_per_batch() -> None:
    recorder = Recorder()
    model = tiny_model(optim=OptimConfig(lr=None, base_lr=1e-3, warmup_epochs=0))
    trainer([recorder], max_steps=2).fit(model, datamodule=WithBatchSize())
    assert recorder.lrs[0] == pytest.approx(1e-3 * 8 / 256)  # no warmup: the first step runs at the peak


def test_a_subclass_that_skips_the_schedule_hook_fails_instead_of_training_at_lr_0() -> None:
    class Forgetful(StableRep):
        def on_train_start(self) -> None:  # no super().on_train_start()
            pass

    model = Forgetful(TinyBackbone(), head_hidden_dim=8, head_out_dim=4, head_layers=2)
    with pytest.raises(
        RuntimeError, match=r"Forgetful\.on_train_start must call super\(\)\.on_train_start\(\)"
    ):
        trainer([], max_steps=2).fit(model, train_dataloaders=sized())
