"""The paper's photometric augmentation applied to a whole batch, with independent per-image draws.

The recipe splits in two. `crop_transform` runs per image (RandomResizedCrop, optional downsample,
horizontal flip) and leaves every view the same size; this module then does colour jitter,
grayscale, blur and normalisation for a whole batch in vectorised passes — in the data workers or
on the GPU after transfer — instead of once per image. The flip moves ahead of the colour
operations because it commutes with all of them (pixel-wise maps, whole-image means, a symmetric
kernel with symmetric padding), so the distribution is that of `train_transform`. Each image draws
its own parameters from torchvision's distributions (jitter factors uniform in [1 − s, 1 + s], hue
in [−h, h], a random order of the four jitter operations, the configured probabilities).
Arithmetic is float32 throughout, where a per-image uint8 pipeline rounds after every operation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from stablerep_pl.augment import batch_color
from stablerep_pl.augment.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentationConfig, blur_kernel_size
from stablerep_pl.distributed.devices import no_autocast

CPU_CHUNK_BYTES = 2 << 20  # float32 bytes per vectorised pass on CPU

JITTER_OPS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    batch_color.adjust_brightness_,
    batch_color.adjust_contrast_,
    batch_color.adjust_saturation_,
    batch_color.adjust_hue,
)


@dataclass
class BatchAugmentationParams:
    """Per-image random draws for a batch of N images (all 1-D or `[N, 4]`, on the CPU)."""

    jitter: torch.Tensor  # [N] bool: colour jitter applied
    order: torch.Tensor  # [N, 4] long: permutation of (brightness, contrast, saturation, hue)
    factors: torch.Tensor  # [N, 4] float: the four jitter factors
    grayscale: torch.Tensor  # [N] bool
    blur: torch.Tensor  # [N] bool
    sigma: torch.Tensor  # [N] float: blur sigma


class BatchAugmentation(torch.nn.Module):
    """uint8 (or [0, 1] float) views `[..., 3, S, S]` → colour-jittered, grey, blurred (each with its
    configured probability) and ImageNet-normalised float32. The flip belongs to `crop_transform`."""

    def __init__(self, cfg: AugmentationConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.kernel_size = blur_kernel_size(cfg.image_size)
        brightness, contrast, saturation, hue = cfg.jitter
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
        if min(brightness, contrast, saturation) < 0:
            raise ValueError(f"jitter strengths must be non-negative, got {cfg.jitter}")
        self.ranges = [(max(0.0, 1 - s), 1 + s) for s in (brightness, contrast, saturation)] + [(-hue, hue)]
        self.active = [s > 0 for s in cfg.jitter]  # a zero strength skips the operation, as torchvision
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def sample(self, n: int, generator: torch.Generator | None = None) -> BatchAugmentationParams:
        """Independent draws for n images from torch's global RNG (or `generator`)."""

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) < p

        factors = torch.stack(
            [torch.empty(n).uniform_(lo, hi, generator=generator) for lo, hi in self.ranges], dim=1
        )
        return BatchAugmentationParams(
            jitter=coin(self.cfg.jitter_p),
            order=torch.rand(n, 4, generator=generator).argsort(dim=1),
            factors=factors,
            grayscale=coin(self.cfg.grayscale_p),
            blur=coin(self.cfg.blur_p),
            sigma=torch.empty(n).uniform_(*self.cfg.blur_sigma, generator=generator),
        )

    def apply(self, images: torch.Tensor, params: BatchAugmentationParams) -> torch.Tensor:
        """Augment float `[N, 3, S, S]` in [0, 1] with the given draws; returns normalised images."""
        return self._apply_(images.clone(), params)

    def _apply_(self, x: torch.Tensor, params: BatchAugmentationParams) -> torch.Tensor:
        """`apply`, overwriting `x`."""
        for position in range(4):
            for op, (function, active) in enumerate(zip(JITTER_OPS, self.active)):
                if active:
                    chosen = params.jitter & (params.order[:, position] == op)
                    _update_(x, chosen, lambda sub, idx, f=function, o=op: f(sub, params.factors[idx, o]))
        _update_(x, params.grayscale, lambda sub, idx: batch_color.grayscale(sub).expand_as(sub))
        _update_(
            x,
            params.blur,
            lambda sub, idx: batch_color.gaussian_blur(sub, self.kernel_size, params.sigma[idx].to(x.device)),
        )
        return x.sub_(self.mean).div_(self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() < 4 or images.shape[-3] != 3:
            raise ValueError(f"expected RGB views [..., 3, H, W], got shape {tuple(images.shape)}")
        # fp32 pixels under an enclosing autocast (e.g. a loader iterated inside bf16 autocast): the
        # blur is a convolution, which autocast would run in bf16, not fitting the batch's dtype
        with no_autocast(images.device):
            return self._augment(images)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(-1, *images.shape[-3:])
        scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
        out = torch.empty(flat.shape, dtype=torch.float32, device=flat.device)
        params = self.sample(flat.shape[0])
        # On CPU, chunks of a few MB stay in cache; whole-batch passes at 224 px would stream
        # every temporary through memory.
        bytes_per_view = 4 * flat.shape[1:].numel()
        step = max(1, CPU_CHUNK_BYTES // bytes_per_view) if flat.device.type == "cpu" else max(1, len(flat))
        for i in range(0, len(flat), step):
            chunk = torch.mul(flat[i : i + step], scale, out=out[i : i + step])
            self._apply_(chunk, _slice(params, slice(i, i + step)))
        return out.view(*images.shape[:-3], *out.shape[-3:])


def _slice(params: BatchAugmentationParams, index: slice) -> BatchAugmentationParams:
    return BatchAugmentationParams(**{k: v[index] for k, v in vars(params).items()})


def _update_(
    images: torch.Tensor,
    mask: torch.Tensor,
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Replace the masked images, in place, by `function(images[mask], indices)`."""
    indices = mask.nonzero().squeeze(1)
    if indices.numel():
        on_device = indices.to(images.device)
        images.index_copy_(0, on_device, function(images.index_select(0, on_device), indices))
