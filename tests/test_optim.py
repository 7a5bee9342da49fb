import math

import pytest
import torch

from stablerep_pl.optim import OptimConfig, build_adamw, resolve_warmup_steps, warmup_cosine_factor


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
    assert resolve_warmup_steps(OptimConfig(warmup_epochs=0.5), total_steps=150, max_epochs=15) == 5
    assert resolve_warmup_steps(OptimConfig(warmup_steps=7), total_steps=150, max_epochs=15) == 7
    assert resolve_warmup_steps(OptimConfig(), total_steps=150, max_epochs=-1) == 0


def test_lr_scaling_rule_of_the_paper() -> None:
    # 2e-4 * 8256 / 256 * 0.5 ≈ 3.2e-3 (the paper's ViT-B/16 setting, with base_lr = 1e-4)
    assert OptimConfig(lr=None, base_lr=1e-4).peak_lr(8256) == pytest.approx(3.225e-3)
    assert OptimConfig(lr=5e-4).peak_lr(8256) == 5e-4
    with pytest.raises(ValueError, match="exactly one"):
        OptimConfig(lr=1e-3, base_lr=1e-4)


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    optimizer = build_adamw(model, OptimConfig(weight_decay=0.1), lr=1e-3)
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(model[0].weight), id(model[2].weight)}
    assert optimizer.defaults["betas"] == (0.9, 0.98)
