import torch

from stablerep_pl.losses import MultiPosConLoss
from stablerep_pl.methods import StableRep
from stablerep_pl.methods.base import views_first
from stablerep_pl.models import TimmBackbone


def tiny_model() -> StableRep:
    backbone = TimmBackbone("resnet10t")
    return StableRep(backbone, head_hidden_dim=32, head_out_dim=16, temperature=0.1)


def test_views_first_layout() -> None:
    images = torch.randn(4, 3, 3, 8, 8)
    flat = views_first(images)
    for i in range(4):
        for k in range(3):
            assert torch.equal(flat[k * 4 + i], images[i, k])


def test_loss_uses_caption_of_every_view() -> None:
    torch.manual_seed(0)
    model = tiny_model().train()
    n, m = 4, 3
    batch = {"images": torch.randn(n, m, 3, 32, 32), "caption_ids": torch.tensor([7, 3, 9, 1])}
    torch.manual_seed(1)
    loss = model.compute_losses(batch)["loss"]
    # Independent labelling: image (caption i, view k) carries caption i's id, whatever its row.
    torch.manual_seed(1)
    out = model.embed(batch["images"])
    labels = torch.tensor([int(batch["caption_ids"][i]) for k in range(m) for i in range(n)])
    expected = MultiPosConLoss(temperature=0.1)(out["projections"], labels)
    torch.testing.assert_close(loss, expected)
    assert out["features"].shape == (n * m, model.feature_dim)
    assert out["projections"].shape == (n * m, 16)


def test_backward_reaches_backbone_and_head() -> None:
    model = tiny_model().train()
    batch = {"images": torch.randn(4, 2, 3, 32, 32), "caption_ids": torch.arange(4)}
    model.compute_losses(batch)["loss"].backward()
    assert model.backbone.model.conv1[0].weight.grad.abs().sum() > 0
    assert model.head.mlp[0].weight.grad.abs().sum() > 0


def test_a_custom_loss_module_is_used() -> None:
    class MeanNorm(torch.nn.Module):
        def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return features.norm(dim=1).mean()

    model = StableRep(TimmBackbone("resnet10t"), head_hidden_dim=8, head_out_dim=4, loss=MeanNorm())
    batch = {"images": torch.randn(2, 2, 3, 32, 32), "caption_ids": torch.arange(2)}
    model.eval()
    out = model.embed(batch["images"])
    torch.testing.assert_close(model.compute_losses(batch)["loss"], out["projections"].norm(dim=1).mean())
