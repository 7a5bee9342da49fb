"""Batched per-image colour/blur operations equal torchvision's kernels applied image by image."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from stablerep_pl.augment import batch_color


def images(n: int = 12, size: int = 20) -> torch.Tensor:
    """Random colours plus the awkward cases: grey, black, white, saturated primaries, 8-bit levels."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0] = 0.5  # grey: hue undefined
    x[1] = 0.0
    x[2] = 1.0
    x[3, 0], x[3, 1:] = 1.0, 0.0  # pure red
    x[4, :, :, : size // 2] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)  # pure green half
    x[5] = (x[5] * 255).round() / 255  # ties between channels are common in 8-bit images
    x[5, 1] = x[5, 0]
    return x


def per_image(fn, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(x[i], float(factors[i])) for i in range(len(x))])


@pytest.mark.parametrize(
    ("ours", "theirs", "low", "high"),
    [
        (batch_color.adjust_brightness_, TF.adjust_brightness, 0.0, 2.0),
        (batch_color.adjust_contrast_, TF.adjust_contrast, 0.0, 2.0),
        (batch_color.adjust_saturation_, TF.adjust_saturation, 0.0, 2.0),
        (batch_color.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_jitter_ops_match_torchvision_per_image(ours, theirs, low: float, high: float) -> None:
    x = images()
    factors = torch.linspace(low, high, len(x))[
        torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    ]
    torch.testing.assert_close(ours(x.clone(), factors), per_image(theirs, x, factors), atol=2e-6, rtol=0)


def test_identity_factors_leave_images_unchanged() -> None:
    x = images()
    ones = torch.ones(len(x))
    for fn in (batch_color.adjust_brightness_, batch_color.adjust_contrast_, batch_color.adjust_saturation_):
        assert torch.equal(fn(x.clone(), ones), x)
    torch.testing.assert_close(batch_color.adjust_hue(x, torch.zeros(len(x))), x, atol=2e-6, rtol=0)


def test_hue_rotation_is_periodic() -> None:
    x = images()
    a = batch_color.adjust_hue(
        batch_color.adjust_hue(x, torch.full((len(x),), 0.5)), torch.full((len(x),), 0.5)
    )
    torch.testing.assert_close(a, x, atol=5e-6, rtol=0)


def test_grayscale_matches_torchvision() -> None:
    x = images()
    torch.testing.assert_close(batch_color.grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel_size", [3, 7, 23])
def test_blur_matches_torchvision_per_image(kernel_size: int) -> None:
    x = images(size=32)
    sigma = torch.linspace(0.1, 2.0, len(x))
    expected = torch.stack(
        [TF.gaussian_blur(x[i], [kernel_size, kernel_size], [float(sigma[i])] * 2) for i in range(len(x))]
    )
    torch.testing.assert_close(batch_color.gaussian_blur(x, kernel_size, sigma), expected, atol=2e-6, rtol=0)


def test_blur_of_no_images_is_empty() -> None:
    empty = torch.zeros(0, 3, 8, 8)
    assert batch_color.gaussian_blur(empty, 3, torch.zeros(0)).shape == empty.shape
