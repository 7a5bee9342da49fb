"""BatchAugmentation: the same draws and results as torchvision's per-image recipe, for a batch."""

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from stablerep_pl.augment import batch_augment
from stablerep_pl.augment.batch_augment import BatchAugmentation, BatchAugmentationParams
from stablerep_pl.augment.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentationConfig, blur_kernel_size

TORCHVISION_JITTER = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def reference(x: torch.Tensor, p: BatchAugmentationParams, cfg: AugmentationConfig) -> torch.Tensor:
    """torchvision's float kernels, one image at a time, with the given draws."""
    out = []
    for i in range(len(x)):
        image = x[i]
        if p.jitter[i]:
            for op in p.order[i].tolist():
                if cfg.jitter[op] > 0:
                    image = TORCHVISION_JITTER[op](image, float(p.factors[i, op]))
        if p.grayscale[i]:
            image = TF.rgb_to_grayscale(image, num_output_channels=3)
        if p.blur[i]:
            k = blur_kernel_size(cfg.image_size)
            image = TF.gaussian_blur(image, [k, k], [float(p.sigma[i])] * 2)
        out.append(TF.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD)))
    return torch.stack(out)


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentationConfig(image_size=24),  # the paper's probabilities
        AugmentationConfig(image_size=24, jitter_p=1.0, grayscale_p=0.5, blur_p=1.0),
        AugmentationConfig(image_size=24, jitter=(0.4, 0.0, 0.4, 0.0), jitter_p=1.0),  # skipped ops
    ],
)
def test_apply_equals_torchvision_image_by_image(cfg: AugmentationConfig) -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 3, 24, 24)
    aug = BatchAugmentation(cfg)
    params = aug.sample(len(x))
    torch.testing.assert_close(aug.apply(x, params), reference(x, params, cfg), atol=3e-5, rtol=0)


def test_draws_follow_the_configured_distributions() -> None:
    cfg = AugmentationConfig(jitter=(0.4, 0.3, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2, blur_p=0.5)
    n = 20_000
    p = BatchAugmentation(cfg).sample(n, generator=torch.Generator().manual_seed(0))
    tolerance = 4 * math.sqrt(0.25 / n)  # four standard errors of a proportion
    for flags, prob in [(p.jitter, 0.8), (p.grayscale, 0.2), (p.blur, 0.5)]:
        assert abs(flags.float().mean().item() - prob) < tolerance
    for column, (lo, hi) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        f = p.factors[:, column]
        assert lo <= f.min() < lo + 0.01 and hi - 0.01 < f.max() <= hi
        assert abs(f.mean().item() - (lo + hi) / 2) < 0.01
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    counts = torch.unique(p.order, dim=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > n / 24 * 0.85  # every order, about equally often


def test_batch_statistics_match_torchvision_transforms() -> None:
    """An independent check of the sampling: torchvision's own random transforms on the same images.

    At this tolerance a jitter probability of 1.0 for 0.8, grayscale 0.1 for 0.2, hue 0.2 for 0.1 or
    brightness 0.3 for 0.4 each fail (measured differences 0.02-0.09; equal configs differ by < 0.006).
    """
    cfg = AugmentationConfig(image_size=8, blur_p=0.0)
    torchvision_colour = v2.Compose(
        [v2.RandomApply([v2.ColorJitter(*cfg.jitter)], p=cfg.jitter_p), v2.RandomGrayscale(cfg.grayscale_p),
         v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )  # fmt: skip
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8).expand(4000, 3, 8, 8).contiguous()
    ours = BatchAugmentation(cfg)(x)
    theirs = torch.stack([torchvision_colour(image) for image in x])
    for stat in (lambda t: t.mean(dim=(2, 3)), lambda t: t.std(dim=(2, 3))):
        a, b = stat(ours), stat(theirs)
        torch.testing.assert_close(a.mean(0), b.mean(0), atol=0.015, rtol=0)
        torch.testing.assert_close(a.std(0), b.std(0), atol=0.015, rtol=0)


def test_flip_commutes_with_every_photometric_operation() -> None:
    """Why `crop_transform` may flip before the batched colour stage without changing the recipe."""
    cfg = AugmentationConfig(image_size=24, jitter_p=1.0, grayscale_p=0.5, blur_p=1.0)
    aug = BatchAugmentation(cfg)
    x = torch.rand(16, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    params = aug.sample(16, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        aug.apply(x.flip(-1), params), aug.apply(x, params).flip(-1), atol=1e-6, rtol=0
    )


def test_forward_keeps_leading_dims_and_equals_apply_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_augment, "CPU_CHUNK_BYTES", 7 * 3 * 16 * 16 * 4)  # 100 views: 15 chunks
    aug = BatchAugmentation(AugmentationConfig(image_size=16))
    views = (torch.rand(5, 20, 3, 16, 16) * 255).to(torch.uint8)
    torch.manual_seed(7)
    out = aug(views)
    torch.manual_seed(7)
    flat = views.reshape(100, 3, 16, 16).float() / 255
    expected = aug.apply(flat, aug.sample(100))
    assert out.shape == (5, 20, 3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.reshape(100, 3, 16, 16), expected, atol=2e-5, rtol=0)


def test_no_photometric_augmentation_is_just_normalisation() -> None:
    cfg = AugmentationConfig(image_size=8, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    x = (torch.rand(6, 3, 8, 8) * 255).to(torch.uint8)
    expected = TF.normalize(x.float() / 255, list(IMAGENET_MEAN), list(IMAGENET_STD))
    torch.testing.assert_close(BatchAugmentation(cfg)(x), expected)


def test_an_empty_batch_stays_empty() -> None:
    out = BatchAugmentation(AugmentationConfig(image_size=8))(torch.zeros(0, 4, 3, 8, 8, dtype=torch.uint8))
    assert out.shape == (0, 4, 3, 8, 8) and out.dtype == torch.float32


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="hue"):
        BatchAugmentation(AugmentationConfig(jitter=(0.4, 0.4, 0.4, 0.7)))
    with pytest.raises(ValueError, match="RGB"):
        BatchAugmentation(AugmentationConfig())(torch.zeros(2, 1, 8, 8))


def test_autocast_around_the_loader_leaves_the_pixels_in_fp32() -> None:
    # A loader iterated inside bf16 autocast (num_workers 0, e.g. a reference computed under the run's
    # precision) used to blur in bf16 and fail writing the result back into the fp32 batch.
    aug = BatchAugmentation(AugmentationConfig(image_size=16, blur_p=1.0))
    views = (torch.rand(2, 4, 3, 16, 16) * 255).to(torch.uint8)
    torch.manual_seed(3)
    plain = aug(views)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = aug(views)
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain)
