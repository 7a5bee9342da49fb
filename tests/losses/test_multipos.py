"""MultiPosConLoss / SupConLoss / NTXentLoss against the naive float64 references (single process)."""

from __future__ import annotations

import pytest
import torch

from stablerep_pl.losses import MultiPosConLoss, NTXentLoss, SupConLoss, multipos_contrastive_loss

TOL = {"rtol": 1e-6, "atol": 1e-6}


def _grad(loss_fn, features: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    x = features.detach().clone().requires_grad_(True)
    value = loss_fn(x, *args)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


LABEL_CASES = {
    "m3_regular": torch.arange(12) // 3,
    "uneven_with_singletons": torch.tensor([4, 4, 4, 4, 9, 9, 1, 2, 2, 2, -3, 8, 8, 8, 8, 8, 0]),
    "all_singletons": torch.arange(9) * 5,
    "one_caption": torch.zeros(8, dtype=torch.int64),
    "pair": torch.tensor([3, 3]),
    "single_image": torch.tensor([7]),
    "int32_labels": (torch.arange(10) % 4).to(torch.int32),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES))
@pytest.mark.parametrize("temperature", [0.1, 0.03, 0.7])
def test_multipos_matches_naive(naive, case: str, temperature: float) -> None:
    labels = LABEL_CASES[case]
    features = torch.randn(labels.shape[0], 6, dtype=torch.float64)
    value, grad = _grad(MultiPosConLoss(temperature), features, labels)
    ref_value, ref_grad = _grad(lambda x, y: naive.multipos(x, y, temperature).mean(), features, labels)
    torch.testing.assert_close(value, ref_value, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)
    assert value.dtype == torch.float64


def test_multipos_random_labels_and_sizes(naive) -> None:
    generator = torch.Generator().manual_seed(3)
    for n in (5, 13, 24):
        labels = naive.random_labels(n, generator)
        features = torch.randn(n, 9, dtype=torch.float64, generator=generator)
        value, grad = _grad(MultiPosConLoss(0.1), features, labels)
        ref_value, ref_grad = _grad(lambda x, y: naive.multipos(x, y, 0.1).mean(), features, labels)
        torch.testing.assert_close(value, ref_value, **TOL)
        torch.testing.assert_close(grad, ref_grad, **TOL)


def test_all_singletons_give_zero() -> None:
    features = torch.randn(6, 4, requires_grad=True)
    loss = MultiPosConLoss()(features, torch.arange(6))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(features.grad) == 0


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_supcon_matches_khosla_l_out(naive, temperature: float) -> None:
    """Against Khosla et al.'s formula written out over class labels (not against our core's reference)."""
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 0, 3, 2, 2, 2])  # uneven classes and a singleton (3)
    features = torch.randn(11, 5, dtype=torch.float64)
    value, grad = _grad(SupConLoss(temperature), features, labels)
    ref_value, ref_grad = _grad(lambda x, y: naive.supcon(x, y, temperature).mean(), features, labels)
    torch.testing.assert_close(value, ref_value, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_ntxent_matches_simclr_formula(naive, n: int) -> None:
    z1, z2 = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
    z = torch.cat([z1, z2]).requires_grad_(True)
    value = NTXentLoss(0.2)(z[:n], z[n:])
    (grad,) = torch.autograd.grad(value, z)
    zr = torch.cat([z1, z2]).requires_grad_(True)
    ref = naive.ntxent(zr[:n], zr[n:], 0.2).mean()
    (ref_grad,) = torch.autograd.grad(ref, zr)
    torch.testing.assert_close(value, ref.detach(), **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)
    # …and it is the multi-positive loss with one id per image (m = 2).
    ids = torch.arange(n).repeat(2)
    torch.testing.assert_close(value, multipos_contrastive_loss(torch.cat([z1, z2]), ids, 0.2), **TOL)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 64])
def test_chunked_equals_unchunked(naive, chunk_size: int) -> None:
    labels = naive.random_labels(19, torch.Generator().manual_seed(1))
    features = torch.randn(19, 8, dtype=torch.float64)
    value, grad = _grad(MultiPosConLoss(0.1), features, labels)
    chunked, chunked_grad = _grad(MultiPosConLoss(0.1, chunk_size=chunk_size), features, labels)
    torch.testing.assert_close(chunked, value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked_grad, grad, rtol=1e-12, atol=1e-12)


def test_no_hidden_state_across_batch_sizes(naive) -> None:
    """One module, a full batch, a short last batch, a full batch again: each one exact."""
    loss = MultiPosConLoss(0.1)
    generator = torch.Generator().manual_seed(5)
    for n in (12, 7, 12, 1, 12):
        labels = naive.random_labels(n, generator)
        features = torch.randn(n, 4, dtype=torch.float64, generator=generator)
        torch.testing.assert_close(
            loss(features, labels), naive.multipos(features, labels, 0.1).mean(), **TOL
        )


def test_empty_local_batch_is_zero() -> None:
    features = torch.randn(0, 4, requires_grad=True)
    loss = MultiPosConLoss()(features, torch.zeros(0, dtype=torch.int64))
    loss.backward()
    assert loss.item() == 0.0
    assert features.grad.shape == (0, 4)


def test_bf16_autocast_computes_in_fp32(naive) -> None:
    layer = torch.nn.Linear(16, 32)
    inputs = torch.randn(24, 16)
    labels = torch.arange(24) // 6
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = layer(inputs)
        assert features.dtype == torch.bfloat16
        loss = MultiPosConLoss(0.05)(features, labels)
    assert loss.dtype == torch.float32
    # Same value as fp32 arithmetic on the same (bf16-rounded) features, without autocast.
    expected = MultiPosConLoss(0.05)(features.detach().float(), labels)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        loss.detach().double(), naive.multipos(features.detach(), labels, 0.05).mean(), rtol=1e-5, atol=1e-5
    )
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


def test_small_temperature_is_stable_in_fp32(naive) -> None:
    base = torch.randn(4, 32)
    features = torch.cat([base + 1e-3 * torch.randn(4, 32) for _ in range(5)])  # near-duplicates
    features = torch.cat([features, 50 * torch.randn(6, 32)])  # and large norms
    labels = torch.cat([torch.arange(4).repeat(5), torch.arange(10, 16)])
    x = features.clone().requires_grad_(True)
    loss = MultiPosConLoss(0.03)(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    reference = naive.multipos(features, labels, 0.03).mean()
    torch.testing.assert_close(loss.detach().double(), reference, rtol=1e-5, atol=1e-5)


def test_chunked_mode_saves_no_quadratic_tensor() -> None:
    """Autograd keeps only O(N·D) tensors in chunked mode; unchunked keeps the one N×N logits block."""
    n, dim = 96, 8
    features = torch.randn(n, dim, requires_grad=True)
    labels = torch.arange(n) // 6

    def saved_sizes(chunk_size: int | None) -> list[int]:
        sizes: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            MultiPosConLoss(0.1, chunk_size=chunk_size)(features, labels).backward()
        return sizes

    assert max(saved_sizes(16)) <= n * (dim + 1)
    unchunked = saved_sizes(None)
    assert sum(size >= n * n for size in unchunked) == 1


@pytest.mark.parametrize(
    ("kwargs", "features", "labels", "message"),
    [
        ({}, torch.randn(8), torch.arange(8), "shape \\[N, D\\]"),
        ({}, torch.randn(8, 4), torch.arange(8).float(), "integer ids"),
        ({}, torch.randn(8, 4), torch.ones(8, dtype=torch.bool), "integer ids"),
        ({}, torch.randn(8, 4), torch.arange(7), "shape \\[8\\]"),
        ({}, torch.randn(8, 4), torch.arange(8)[:, None], "shape \\[8\\]"),
        ({}, torch.arange(32).view(8, 4), torch.arange(8), "floating-point"),
    ],
)
def test_invalid_inputs_raise(kwargs, features, labels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiPosConLoss(**kwargs)(features, labels)


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf"), "0.1"])
def test_invalid_temperature_raises(temperature) -> None:
    with pytest.raises(ValueError, match="temperature"):
        MultiPosConLoss(temperature)
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature)
    with pytest.raises(ValueError, match="temperature"):
        multipos_contrastive_loss(torch.randn(4, 3), torch.arange(4), temperature)


def test_invalid_chunk_size_and_views_raise() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        MultiPosConLoss(chunk_size=0)
    with pytest.raises(ValueError, match="same number of rows"):
        NTXentLoss()(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="same feature dimension"):
        NTXentLoss()(torch.randn(4, 3), torch.randn(4, 2))


def test_modules_repr_and_defaults(naive) -> None:
    assert "chunk_size=128" in repr(MultiPosConLoss(chunk_size=128))
    # The default temperature is the paper's 0.1, for both modules: checked by value.
    features, labels = torch.randn(9, 4, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 3])
    torch.testing.assert_close(
        MultiPosConLoss()(features, labels), naive.multipos(features, labels, 0.1).mean()
    )
    torch.testing.assert_close(SupConLoss()(features, labels), naive.supcon(features, labels, 0.1).mean())
