"""The shared cores: the fused row reduction's custom backward, label-sum positives, no-group gather."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stablerep_pl.distributed.gather import all_gather_rows, gather_batch, world_info
from stablerep_pl.losses import masked_row_reduce, positive_stats


@pytest.mark.parametrize("kind", ["logsumexp", "softplus"])
@pytest.mark.parametrize("diagonal", [None, 0, 3])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_masked_row_reduce_gradcheck(kind: str, diagonal: int | None, chunk_size: int | None) -> None:
    anchors = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    candidates = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda a, b: masked_row_reduce(a, b, kind, diagonal, chunk_size), (anchors, candidates)
    )


@pytest.mark.parametrize("kind", ["logsumexp", "softplus"])
def test_masked_row_reduce_values(kind: str) -> None:
    anchors, candidates = torch.randn(4, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    logits = anchors @ candidates.T
    keep = torch.ones_like(logits, dtype=torch.bool)
    for r in range(4):
        keep[r, 2 + r] = False
    if kind == "logsumexp":
        expected = torch.stack([torch.logsumexp(logits[r][keep[r]], 0) for r in range(4)])
    else:
        expected = torch.stack([F.softplus(logits[r][keep[r]]).sum() for r in range(4)])
    for chunk_size in (None, 1, 3):
        torch.testing.assert_close(masked_row_reduce(anchors, candidates, kind, 2, chunk_size), expected)


def test_anchor_without_candidates_has_finite_gradient() -> None:
    anchors = torch.randn(1, 3, requires_grad=True)
    value = masked_row_reduce(anchors, anchors, "logsumexp", 0)
    assert value.item() == float("-inf")
    (value.clamp(min=0) * 0).sum().backward()
    assert torch.isfinite(anchors.grad).all()


def test_positive_stats_matches_loops() -> None:
    anchors, candidates = torch.randn(6, 5, dtype=torch.float64), torch.randn(10, 5, dtype=torch.float64)
    anchor_labels = torch.tensor([3, -1, 3, 8, 100, 0])
    candidate_labels = torch.tensor([0, 3, 3, 8, 8, 8, -1, 5, 3, 7])
    dot, count = positive_stats(anchors, candidates, anchor_labels, candidate_labels, exclude_self=False)
    for a in range(6):
        pos = [j for j in range(10) if candidate_labels[j] == anchor_labels[a]]
        assert count[a].item() == len(pos)
        expected = sum((anchors[a] @ candidates[j] for j in pos), torch.zeros((), dtype=torch.float64))
        torch.testing.assert_close(dot[a], expected)


def test_positive_stats_excludes_self() -> None:
    features = torch.randn(5, 3, dtype=torch.float64)
    labels = torch.tensor([1, 1, 2, 1, 4])
    dot, count = positive_stats(features[1:4], features, labels[1:4], labels, exclude_self=True)
    assert count.tolist() == [2, 0, 2]
    torch.testing.assert_close(dot[0], features[1] @ features[0] + features[1] @ features[3])
    torch.testing.assert_close(dot[2], features[3] @ features[0] + features[3] @ features[1])
    torch.testing.assert_close(dot[1], torch.zeros((), dtype=torch.float64))


def test_positive_stats_excludes_another_encoding_of_self() -> None:
    """With `self_rows` (a momentum key of each anchor's image in its own column) the removed own
    term is a·r, not a·a; checked against loops over the candidates other than the own column."""
    anchors, candidates = torch.randn(3, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([1, 1, 2, 1, 4, 2])
    dot, count = positive_stats(anchors, candidates, labels[2:5], labels, True, candidates[2:5])
    for a in range(3):
        pos = [j for j in range(6) if j != a + 2 and labels[j] == labels[a + 2]]
        assert count[a].item() == len(pos)
        expected = sum((anchors[a] @ candidates[j] for j in pos), torch.zeros((), dtype=torch.float64))
        torch.testing.assert_close(dot[a], expected)


def test_single_process_gather_is_identity(monkeypatch) -> None:
    x, labels = torch.randn(4, 2), torch.arange(4)
    assert world_info() == (0, 1)
    gathered, offsets = gather_batch([x, labels], [True, False])
    assert gathered[0] is x and gathered[1] is labels and offsets == [0, 0]
    assert all_gather_rows(x) is x
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    assert world_info() == (0, 1)
    with pytest.raises(ValueError, match="one with_grad flag"):
        gather_batch([x], [True, False])
