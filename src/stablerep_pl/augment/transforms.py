"""Augmentation recipes with torchvision.transforms.v2 (the paper's per-image recipe, any resolution)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentationConfig:
    """Paper defaults at 224 px; shrink `image_size` (and perhaps raise `min_scale`) for CPU runs."""

    image_size: int = 224
    min_scale: float = 0.08
    max_scale: float = 1.0
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_p: float = 0.5
    downsample_p: float = 0.0  # paper's optional "downsample" augmentation uses 0.05
    downsample_sizes: tuple[int, ...] = (64, 128)

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")


class RandomDownsample(torch.nn.Module):
    """With probability p, resize to a random small size and back: mimics low-resolution real photos."""

    def __init__(self, p: float, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.p, self.sizes = p, sizes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or torch.rand(()) >= self.p:
            return image
        size = self.sizes[int(torch.randint(len(self.sizes), ()))]
        original = image.shape[-2:]
        small = v2.functional.resize(image, [size, size], antialias=True)
        return v2.functional.resize(small, list(original), antialias=True)


def blur_kernel_size(image_size: int) -> int:
    """Odd kernel ≈ 10 % of the image side (23 px at 224, as in SimCLR/StableRep)."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def crop_transform(cfg: AugmentationConfig) -> v2.Compose:
    """The recipe's per-image, geometric half: PIL/uint8 image → uint8 view `[3, S, S]`.

    After it every view has the same size, so the photometric half can run batched
    (`data.batch_augment.BatchAugmentation`).
    """
    return v2.Compose([*_geometric(cfg), v2.RandomHorizontalFlip(p=cfg.flip_p)])


def _geometric(cfg: AugmentationConfig) -> list[torch.nn.Module]:
    return [
        v2.ToImage(),
        v2.RandomResizedCrop(cfg.image_size, scale=(cfg.min_scale, cfg.max_scale), antialias=True),
        RandomDownsample(cfg.downsample_p, cfg.downsample_sizes),
    ]


def train_transform(cfg: AugmentationConfig) -> v2.Compose:
    """PIL image or uint8 tensor → augmented, ImageNet-normalised float tensor `[3, S, S]`."""
    return v2.Compose(
        [
            *_geometric(cfg),
            v2.RandomApply([v2.ColorJitter(*cfg.jitter)], p=cfg.jitter_p),
            v2.RandomGrayscale(p=cfg.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(blur_kernel_size(cfg.image_size), cfg.blur_sigma)], p=cfg.blur_p),
            v2.RandomHorizontalFlip(p=cfg.flip_p),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int, resize_ratio: float = 256 / 224) -> v2.Compose:
    """Resize (side × 256/224) then centre crop, as in the linear-probe protocol."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RGB(),
            v2.Resize(round(image_size * resize_ratio), antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def probe_train_transform(image_size: int, min_scale: float = 0.08) -> v2.Compose:
    """The linear-probe protocol's training augmentation: RandomResizedCrop + horizontal flip."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RGB(),
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
