"""The paper-protocol SGD probe: parallel heads, one pass, cosine schedule, non-affine BatchNorm."""

import pytest
import torch

from stablerep_pl.evaluation.sgd_probe import (
    cached_batches,
    score_heads,
    train_sgd_probe,
)


def separable(
    n_per_class: int, classes: int = 4, dim: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around far-apart centres, with a large offset and scale BatchNorm must undo."""
    g = torch.Generator().manual_seed(seed)
    centres = 6 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[labels] + torch.randn(len(labels), dim, generator=g)
    return 50 * x + 1000, labels


def test_separable_features_reach_99_percent_and_each_lr_is_scored() -> None:
    train, test = separable(100), separable(50, seed=1)
    lrs = [1e-6, 0.1]
    batches, steps = cached_batches(*train, batch_size=32)
    heads = train_sgd_probe(batches, 16, 4, lrs, epochs=5, steps_per_epoch=steps, progress=False)
    result = score_heads(heads, lrs, *test, 4)
    assert result.top1 >= 0.99 and result.best_lr == 0.1
    assert set(result.top1_per_lr) == {1e-6, 0.1} and result.top1_per_lr[1e-6] < 0.9
    assert not heads.norm.training and heads.norm.running_mean.mean() > 500  # BN statistics were learnt


def test_heads_are_independent_of_each_other() -> None:
    """A head's training must not depend on which other learning rates are swept alongside it."""
    train = separable(40)
    batches, steps = cached_batches(*train, batch_size=16, seed=3)
    alone = train_sgd_probe(batches, 16, 4, [0.05], epochs=2, steps_per_epoch=steps, progress=False)
    together = train_sgd_probe(batches, 16, 4, [0.05, 0.5], epochs=2, steps_per_epoch=steps, progress=False)
    assert torch.allclose(alone.weights[0], together.weights[0], atol=1e-6)


def test_a_single_sample_batch_is_skipped_under_batch_norm() -> None:
    x, y = separable(3, classes=3)  # 9 items in batches of 4: the last holds one
    batches, steps = cached_batches(x, y, batch_size=4)
    heads = train_sgd_probe(batches, 16, 3, [0.1], 1, steps, progress=False)
    assert int(heads.norm.num_batches_tracked) == 2
    with pytest.raises(ValueError, match="epochs"):
        train_sgd_probe(batches, 16, 3, [0.1], 0, steps, progress=False)


def test_cached_batches_cover_every_item_once_per_epoch_in_a_new_order() -> None:
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    batches, steps = cached_batches(x, y, batch_size=4)
    assert steps == 3
    epoch0 = torch.cat([b[1] for b in batches(0)])
    epoch1 = torch.cat([b[1] for b in batches(1)])
    assert sorted(epoch0.tolist()) == list(range(10)) and not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch0, torch.cat([b[1] for b in batches(0)]))
