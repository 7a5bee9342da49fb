import pytest
import torch

from stablerep_pl.models import TimmBackbone


def test_vit_takes_img_size_and_patch_size() -> None:
    backbone = TimmBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8)
    assert backbone.dropped_kwargs == []
    assert backbone.model.patch_embed.grid_size == (4, 4)
    out = backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, backbone.num_features) == (2, 192)


def test_resnet_drops_size_arguments_it_does_not_take() -> None:
    backbone = TimmBackbone("resnet18", img_size=32, patch_size=4)
    assert sorted(backbone.dropped_kwargs) == ["img_size", "patch_size"]
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_channels_last_and_checkpointing_give_same_features() -> None:
    torch.manual_seed(0)
    plain = TimmBackbone("resnet10t").eval()
    torch.manual_seed(0)
    tuned = TimmBackbone("resnet10t", channels_last=True, grad_checkpointing=True).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(plain(x), tuned(x), rtol=1e-5, atol=1e-5)


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmBackbone("not_a_model_xyz")
