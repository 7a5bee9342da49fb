"""MultiPosImageTextLoss / ClipLoss / SigLipLoss against the naive float64 references."""

from __future__ import annotations

import math

import pytest
import torch

from stablerep_pl.losses import (
    SIGLIP_INIT_LOGIT_BIAS,
    SIGLIP_INIT_LOGIT_SCALE,
    ClipLoss,
    MultiPosImageTextLoss,
    SigLipLoss,
    multipos_image_text_loss,
)

TOL = {"rtol": 1e-6, "atol": 1e-6}


def _inputs(num_images: int, num_texts: int, dim: int = 6) -> list[torch.Tensor]:
    """Float64 leaves: images, texts, logit_scale, logit_bias."""
    return [
        torch.randn(num_images, dim, dtype=torch.float64, requires_grad=True),
        torch.randn(num_texts, dim, dtype=torch.float64, requires_grad=True),
        torch.tensor(7.5, dtype=torch.float64, requires_grad=True),
        torch.tensor(-3.0, dtype=torch.float64, requires_grad=True),
    ]


def _value_and_grads(fn, leaves: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    value = fn(*leaves)
    used = [leaf for leaf in leaves if leaf.requires_grad]
    grads = torch.autograd.grad(value, used, allow_unused=True)
    return value.detach(), [torch.zeros_like(u) if g is None else g for u, g in zip(used, grads)]


def _assert_same(ours, reference, **tol) -> None:
    torch.testing.assert_close(ours[0], reference[0], **(tol or TOL))
    for grad, ref_grad in zip(ours[1], reference[1]):
        torch.testing.assert_close(grad, ref_grad, **(tol or TOL))


# (image labels, text labels): m images per caption, captions without images, images without caption.
IMAGE_TEXT_CASES = {
    "m3_regular": (torch.arange(4).repeat(3), torch.arange(4)),
    "uneven_groups": (torch.tensor([5, 5, 5, 5, 2, 9, 9, 1]), torch.tensor([5, 2, 9, 1])),
    "missing_partners": (torch.tensor([0, 0, 3, 3, 8]), torch.tensor([0, 3, 4, 6])),
    "duplicate_captions": (torch.tensor([1, 1, 2, 2]), torch.tensor([1, 1, 2])),
    "no_overlap": (torch.tensor([1, 2]), torch.tensor([3, 4, 5])),
}


@pytest.mark.parametrize("case", sorted(IMAGE_TEXT_CASES))
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_multipos_image_text_matches_naive(naive, case: str, chunk_size: int | None) -> None:
    image_labels, text_labels = IMAGE_TEXT_CASES[case]
    leaves = _inputs(len(image_labels), len(text_labels))[:3]
    loss = MultiPosImageTextLoss(chunk_size=chunk_size)

    def reference(images, texts, scale):
        i2t, t2i = naive.image_text(images, texts, image_labels, text_labels, scale)
        return (i2t.mean() + t2i.mean()) / 2

    ours = _value_and_grads(lambda i, t, s: loss(i, t, image_labels, text_labels, s), leaves)
    _assert_same(ours, _value_and_grads(reference, leaves))


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_clip_matches_naive(naive, chunk_size: int | None) -> None:
    leaves = _inputs(7, 7)[:3]
    ours = _value_and_grads(ClipLoss(chunk_size=chunk_size), leaves)

    def reference(images, texts, scale):
        i2t, t2i = naive.clip(images, texts, scale)
        return (i2t.mean() + t2i.mean()) / 2

    _assert_same(ours, _value_and_grads(reference, leaves))
    ids = torch.arange(7)
    same = multipos_image_text_loss(*leaves[:2], ids, ids, leaves[2])
    torch.testing.assert_close(same.detach(), ours[0], **TOL)


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_siglip_matches_naive(naive, labelled: bool, chunk_size: int | None) -> None:
    if labelled:
        image_labels, text_labels = torch.tensor([0, 0, 1, 2, 2, 2, 7]), torch.tensor([0, 1, 2, 3, 0])
    else:
        image_labels = text_labels = None
    leaves = _inputs(7, 5 if labelled else 7)
    loss = SigLipLoss(chunk_size=chunk_size)
    ours = _value_and_grads(lambda i, t, s, b: loss(i, t, s, b, image_labels, text_labels), leaves)
    reference = _value_and_grads(
        lambda i, t, s, b: naive.siglip(i, t, s, b, image_labels, text_labels).mean(), leaves
    )
    _assert_same(ours, reference)
    assert all(torch.count_nonzero(g) > 0 for g in ours[1])  # scale and bias get gradients


def test_siglip_paper_initialisation_values(naive) -> None:
    """At the exported initial values (t' = SIGLIP_INIT_LOGIT_SCALE passed as exp(t'), b) the loss and
    its gradients are the SigLIP paper's t = 10, b = −10 ones, written here as numbers."""
    images, texts = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)

    def loss_at(log_scale: float, bias: float, fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        leaves = [images, texts, torch.tensor(log_scale, dtype=torch.float64, requires_grad=True),
                  torch.tensor(bias, dtype=torch.float64, requires_grad=True)]  # fmt: skip
        return _value_and_grads(lambda i, t, s, b: fn(i, t, s.exp(), b), leaves)

    ours = loss_at(SIGLIP_INIT_LOGIT_SCALE, SIGLIP_INIT_LOGIT_BIAS, SigLipLoss())
    paper = loss_at(math.log(10.0), -10.0, lambda i, t, s, b: naive.siglip(i, t, s, b).mean())
    _assert_same(ours, paper)
    assert all(torch.count_nonzero(g) > 0 for g in ours[1])  # both scalars get gradients


def test_python_float_logit_scale(naive) -> None:
    images, texts = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    i2t, t2i = naive.clip(images, texts, 10.0)
    torch.testing.assert_close(ClipLoss()(images, texts, 10.0), (i2t.mean() + t2i.mean()) / 2, **TOL)
    per_image = naive.siglip(images, texts, 10.0, -10.0)
    torch.testing.assert_close(SigLipLoss()(images, texts, 10.0, -10.0), per_image.mean(), **TOL)


def test_no_hidden_state_and_empty_local_batch(naive) -> None:
    loss = ClipLoss()
    for n in (6, 3, 6, 1):
        images, texts = torch.randn(n, 4, dtype=torch.float64), torch.randn(n, 4, dtype=torch.float64)
        i2t, t2i = naive.clip(images, texts, 5.0)
        torch.testing.assert_close(loss(images, texts, 5.0), (i2t.mean() + t2i.mean()) / 2, **TOL)
    empty = torch.randn(0, 4, requires_grad=True)
    value = MultiPosImageTextLoss()(
        empty, empty, torch.zeros(0, dtype=torch.long), torch.zeros(0).long(), 5.0
    )
    value.backward()
    assert value.item() == 0.0


def test_bf16_autocast_image_text() -> None:
    image_layer, text_layer = torch.nn.Linear(8, 16), torch.nn.Linear(8, 16)
    scale = torch.tensor(50.0, requires_grad=True)
    image_labels, text_labels = torch.arange(6).repeat(3), torch.arange(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images, texts = image_layer(torch.randn(18, 8)), text_layer(torch.randn(6, 8))
        value = MultiPosImageTextLoss()(images, texts, image_labels, text_labels, scale)
        sig = SigLipLoss()(images, texts, scale, torch.tensor(-10.0), image_labels, text_labels)
    assert value.dtype == torch.float32 and sig.dtype == torch.float32
    expected = MultiPosImageTextLoss()(
        images.detach().float(), texts.detach().float(), image_labels, text_labels, 50.0
    )
    torch.testing.assert_close(value.detach(), expected, rtol=1e-6, atol=1e-6)
    (value + sig).backward()
    assert torch.isfinite(image_layer.weight.grad).all() and torch.isfinite(scale.grad)


def test_invalid_inputs_raise() -> None:
    images, texts = torch.randn(6, 4), torch.randn(3, 4)
    image_labels, text_labels = torch.arange(6) % 3, torch.arange(3)
    loss = MultiPosImageTextLoss()
    with pytest.raises(ValueError, match="same feature dimension"):
        loss(images, torch.randn(3, 5), image_labels, text_labels, 10.0)
    with pytest.raises(ValueError, match="text_labels must have shape \\[3\\]"):
        loss(images, texts, image_labels, torch.arange(4), 10.0)
    with pytest.raises(ValueError, match="integer ids"):
        loss(images, texts, image_labels.float(), text_labels, 10.0)
    with pytest.raises(ValueError, match="logit_scale must be a scalar"):
        loss(images, texts, image_labels, text_labels, torch.ones(2))
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        loss(images, texts, image_labels, text_labels, 0.0)
    with pytest.raises(ValueError, match="same number of rows"):
        ClipLoss()(images, texts, 10.0)
    with pytest.raises(ValueError, match="both image_labels and text_labels"):
        SigLipLoss()(images, texts, 10.0, -10.0, image_labels, None)
    with pytest.raises(ValueError, match="logit_bias"):
        SigLipLoss()(images, images, 10.0, float("nan"))
    with pytest.raises(ValueError, match="chunk_size"):
        SigLipLoss(chunk_size=-1)
