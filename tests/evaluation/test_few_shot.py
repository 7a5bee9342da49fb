"""n-way k-shot episodes with nearest class means."""

import pytest
import torch

from stablerep_pl.evaluation.few_shot import few_shot_accuracy


def blobs(n_per_class: int, classes: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(classes, 32, generator=torch.Generator().manual_seed(7))
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    noise = torch.randn(len(labels), 32, generator=torch.Generator().manual_seed(seed))
    return centres[labels] + spread * noise, labels


def test_clusters_are_solved_and_noise_is_at_chance() -> None:
    train, test = blobs(10, 8, 0.05, 0), blobs(20, 8, 0.05, 1)
    result = few_shot_accuracy(*train, *test, ways=5, shots=1, queries=15, episodes=200)
    assert result.top1 == 1.0 and result.ci95 == 0.0
    g = torch.Generator().manual_seed(2)
    noise_train = (torch.randn(80, 32, generator=g), train[1])
    noise_test = (torch.randn(160, 32, generator=g), test[1])
    chance = few_shot_accuracy(*noise_train, *noise_test, ways=5, shots=5, episodes=400)
    assert abs(chance.top1 - 0.2) < 3 * chance.ci95 + 0.01 and chance.ci95 > 0


def test_episodes_are_seeded_and_shots_help() -> None:
    train, test = blobs(10, 8, 1.2, 0), blobs(20, 8, 1.2, 1)
    one = few_shot_accuracy(*train, *test, ways=5, shots=1, episodes=300, seed=4)
    assert one == few_shot_accuracy(*train, *test, ways=5, shots=1, episodes=300, seed=4)
    five = few_shot_accuracy(*train, *test, ways=5, shots=5, episodes=300, seed=4)
    assert five.top1 > one.top1 + 0.05


def test_too_few_classes_or_images_is_a_clear_error() -> None:
    train, test = blobs(2, 4, 0.1, 0), blobs(5, 4, 0.1, 1)
    with pytest.raises(ValueError, match="5-way 1-shot needs 5 classes"):
        few_shot_accuracy(*train, *test, ways=5, shots=1, queries=5)
    with pytest.raises(ValueError, match="only 0 qualify"):
        few_shot_accuracy(*train, *test, ways=2, shots=3, queries=5)
