import pytest
import torch

from stablerep_pl.evaluation import extract_features, fit_linear_probe


def separable(n: int, dim: int = 32, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_linearly_separable_features_are_learned() -> None:
    result = fit_linear_probe(*separable(600), *separable(400, seed=1), num_classes=5)
    assert result.top1 >= 0.99
    assert result.best_lr in result.top1_per_lr


def test_labels_unrelated_to_features_stay_near_chance() -> None:
    x, _ = separable(600)
    y = torch.randint(5, (600,), generator=torch.Generator().manual_seed(5))
    tx, _ = separable(400, seed=1)
    ty = torch.randint(5, (400,), generator=torch.Generator().manual_seed(6))
    assert fit_linear_probe(x, y, tx, ty, num_classes=5).top1 < 0.35


def test_probe_is_deterministic() -> None:
    a = fit_linear_probe(*separable(200), *separable(100, seed=1), num_classes=5, steps=50)
    b = fit_linear_probe(*separable(200), *separable(100, seed=1), num_classes=5, steps=50)
    assert a == b


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="shapes"):
        fit_linear_probe(torch.randn(4, 3), torch.zeros(4), torch.randn(4, 2), torch.zeros(4), 2)


def test_extract_features_keeps_order() -> None:
    data = [(torch.full((3,), float(i)), torch.tensor(i % 2)) for i in range(10)]
    feats, labels = extract_features(lambda x: x * 2, data, batch_size=3)
    torch.testing.assert_close(feats[:, 0], torch.arange(10.0) * 2)
    assert labels.tolist() == [i % 2 for i in range(10)]
