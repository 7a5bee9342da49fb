import math

import pytest
import torch

from stablerep_pl.evaluation.knn import knn_accuracy, knn_predict


def reference_scores(train_x, train_y, test_x, num_classes, k, t):
    """Explicit loops: cosine similarity, k largest, votes exp(sim / t) per class."""
    out = []
    for q in test_x.tolist():
        sims = []
        for x, y in zip(train_x.tolist(), train_y.tolist()):
            dot = sum(a * b for a, b in zip(q, x))
            sims.append((dot / (math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in x))), y))
        votes = [0.0] * num_classes
        for sim, y in sorted(sims, reverse=True)[:k]:
            votes[y] += math.exp(sim / t)
        out.append(votes)
    return torch.tensor(out)


def test_scores_match_explicit_loops() -> None:
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(30, 5, generator=g), torch.randn(7, 5, generator=g)
    train_y = torch.randint(3, (30,), generator=g)
    ours = knn_predict(train_x, train_y, test_x, 3, k=5, temperature=0.5, chunk_size=3)
    torch.testing.assert_close(
        ours, reference_scores(train_x, train_y, test_x, 3, 5, 0.5), rtol=1e-4, atol=1e-4
    )


def test_weights_beat_counts_at_low_temperature() -> None:
    # One very close neighbour of class 0 against two farther ones of class 1.
    train_x = torch.tensor([[1.0, 0.05], [0.6, 0.8], [0.6, -0.8]])
    train_y = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train_x, train_y, query, 2, k=3, temperature=0.05).argmax().item() == 0
    assert knn_predict(train_x, train_y, query, 2, k=3, temperature=100.0).argmax().item() == 1


def test_clusters_are_classified_and_errors_are_clear() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 16, generator=g) * 4
    train_y, test_y = torch.arange(4).repeat(25), torch.arange(4).repeat(10)
    train_x = centres[train_y] + torch.randn(100, 16, generator=g)
    test_x = centres[test_y] + torch.randn(40, 16, generator=g)
    assert knn_accuracy(train_x, train_y, test_x, test_y, 4) == 1.0
    with pytest.raises(ValueError, match="k >= 1"):
        knn_predict(train_x, train_y, test_x, 4, k=0)
