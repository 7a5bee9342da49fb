import math

import pytest
import torch

from stablerep_pl.methods.optim import (
    OptimConfig,
    ScheduleLength,
    WarmupCosine,
    build_adamw,
    optimizer_steps_per_epoch,
    resolve_schedule_length,
    warmup_cosine_factor,
)


def test_warmup_is_linear_then_cosine_to_min_ratio() -> None:
    warm, total = 10, 110
    assert warmup_cosine_factor(0, warm, total) == pytest.approx(0.1)
    assert warmup_cosine_factor(9, warm, total) == pytest.approx(1.0)
    assert warmup_cosine_factor(10, warm, total) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, warm, total) == pytest.approx(0.5)
    assert warmup_cosine_factor(110, warm, total, min_ratio=0.1) == pytest.approx(0.1)
    mid = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert warmup_cosine_factor(35, warm, total, min_ratio=0.1) == pytest.approx(mid)


def test_warmup_steps_from_epochs() -> None:
    # Warmup epochs are counted in optimizer steps per epoch, whatever limits the run.
    epochs_only = resolve_schedule_length(OptimConfig(warmup_epochs=0.5), None, 15, steps_per_epoch=10)
    assert epochs_only == ScheduleLength(total_steps=150, warmup_steps=5)
    steps_only = resolve_schedule_length(OptimConfig(warmup_epochs=0.5), 40, -1, steps_per_epoch=10)
    assert steps_only == ScheduleLength(total_steps=40, warmup_steps=5)  # was 0: max_epochs -1
    both = resolve_schedule_length(OptimConfig(warmup_epochs=1), 7, 3, steps_per_epoch=3)
    assert both == ScheduleLength(total_steps=7, warmup_steps=3)  # not round(1 * 7 / 3) = 2
    explicit = resolve_schedule_length(OptimConfig(warmup_steps=7), 150, 15, steps_per_epoch=None)
    assert explicit == ScheduleLength(total_steps=150, warmup_steps=7)
    capped = resolve_schedule_length(OptimConfig(warmup_epochs=2), 5, None, steps_per_epoch=10)
    assert capped == ScheduleLength(total_steps=5, warmup_steps=5)


def test_warmup_epochs_round_to_the_nearest_step_halves_up() -> None:
    for epochs, per_epoch, expected in [(0.5, 5, 3), (0.5, 3, 2), (0.25, 10, 3), (0.2, 10, 2), (0.5, 1, 1)]:
        config = OptimConfig(warmup_epochs=epochs)
        assert resolve_schedule_length(config, None, 100, per_epoch).warmup_steps == expected


def test_unknown_lengths_are_clear_errors() -> None:
    with pytest.raises(
        ValueError, match=r"no length and trainer\.max_steps is not set; set trainer\.max_steps"
    ):
        resolve_schedule_length(OptimConfig(warmup_steps=0), -1, 10, steps_per_epoch=None)
    with pytest.raises(ValueError, match=r"max_epochs is -1 and trainer\.max_steps is not set"):
        resolve_schedule_length(OptimConfig(), -1, -1, steps_per_epoch=10)
    with pytest.raises(
        ValueError, match=r"warmup_epochs=0\.5 needs the number of steps per epoch.*optim\.warmup_steps"
    ):
        resolve_schedule_length(OptimConfig(warmup_epochs=0.5), 100, -1, steps_per_epoch=None)
    with pytest.raises(ValueError, match="no steps"):
        resolve_schedule_length(OptimConfig(), 0, 10, steps_per_epoch=10)
    # Without warmup in epochs, an unsized loader only needs max_steps.
    assert resolve_schedule_length(OptimConfig(warmup_epochs=0), 9, -1, None) == ScheduleLength(9, 0)


def test_optimizer_steps_per_epoch_as_lightning_steps() -> None:
    # A step after every `accumulate` batches and on the epoch's last batch.
    assert optimizer_steps_per_epoch(6, 1) == 6
    assert optimizer_steps_per_epoch(5, 2) == 3
    assert optimizer_steps_per_epoch(6, 4) == 2
    assert optimizer_steps_per_epoch(float("inf"), 2) is None


def test_warmup_cosine_is_zero_until_resolved_then_the_closed_form() -> None:
    schedule = WarmupCosine(min_ratio=0.1)
    assert schedule(0) == 0.0
    schedule.resolve(ScheduleLength(total_steps=110, warmup_steps=10))
    assert [schedule(s) for s in (0, 35, 500)] == [
        warmup_cosine_factor(0, 10, 110, 0.1),
        warmup_cosine_factor(35, 10, 110, 0.1),
        pytest.approx(0.1),
    ]


def test_lr_scaling_rule_of_the_paper() -> None:
    # 2e-4 * 8256 / 256 * 0.5 ≈ 3.2e-3 (the paper's ViT-B/16 setting, with base_lr = 1e-4)
    assert OptimConfig(lr=None, base_lr=1e-4).peak_lr(8256) == pytest.approx(3.225e-3)
    assert OptimConfig(lr=5e-4).peak_lr(8256) == 5e-4
    assert OptimConfig(lr=5e-4).peak_lr(None) == 5e-4  # an absolute lr needs no batch size
    with pytest.raises(ValueError, match="global batch, which is unknown"):
        OptimConfig(lr=None, base_lr=1e-4).peak_lr(None)
    with pytest.raises(ValueError, match="exactly one"):
        OptimConfig(lr=1e-3, base_lr=1e-4)


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    optimizer = build_adamw(model, OptimConfig(weight_decay=0.1), lr=1e-3)
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(model[0].weight), id(model[2].weight)}
    assert optimizer.defaults["betas"] == (0.9, 0.98)
