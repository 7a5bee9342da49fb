import pytest
import torch
from PIL import Image

from stablerep_pl.augment.transforms import (
    AugmentationConfig,
    RandomDownsample,
    blur_kernel_size,
    crop_transform,
    eval_transform,
    train_transform,
)


def test_train_transform_output() -> None:
    image = Image.new("RGB", (48, 48), (200, 30, 30))
    out = train_transform(AugmentationConfig(image_size=32))(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_augmentations_are_random_but_seeded() -> None:
    image = Image.effect_noise((64, 64), 50).convert("RGB")
    transform = train_transform(AugmentationConfig(image_size=32))
    torch.manual_seed(3)
    a = transform(image)
    torch.manual_seed(3)
    b = transform(image)
    c = transform(image)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_transform_is_the_geometric_half_of_the_recipe() -> None:
    cfg = AugmentationConfig(image_size=24)
    image = (torch.rand(3, 40, 40) * 255).to(torch.uint8)
    view = crop_transform(cfg)(image)
    assert view.shape == (3, 24, 24) and view.dtype == torch.uint8
    names = [type(t).__name__ for t in crop_transform(cfg).transforms]
    assert names == ["ToImage", "RandomResizedCrop", "RandomDownsample", "RandomHorizontalFlip"]
    full = [type(t).__name__ for t in train_transform(cfg).transforms]
    assert full[:3] == names[:3] and "RandomHorizontalFlip" in full


def test_eval_transform_is_deterministic_and_normalised() -> None:
    image = Image.new("L", (28, 28), 255)
    out = eval_transform(32)(image)
    assert out.shape == (3, 32, 32)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out[:, 16, 16], expected)


def test_blur_kernel_matches_paper_at_224() -> None:
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(32) % 2 == 1


def test_downsample_keeps_size_and_loses_detail() -> None:
    image = torch.rand(3, 64, 64)
    out = RandomDownsample(p=1.0, sizes=(8,))(image)
    assert out.shape == image.shape
    assert (out - image).abs().mean() > 0.05


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_scale"):
        AugmentationConfig(min_scale=0.0)
