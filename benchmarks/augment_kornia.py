"""Batched colour augmentation: ours (`BatchAugmentation`) vs kornia's per-sample augmentations, on CPU.

Both run the paper's photometric recipe on uint8 views (ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8
in a random order, RandomGrayscale p = 0.2, Gaussian blur σ ∈ [0.1, 2] with p = 0.5 and a kernel of
`blur_kernel_size(S)`, ImageNet normalisation), so the question is only which to keep:
- speed: images/s of one whole batch, the two implementations interleaved in every repeat (a slow
  phase of the machine hits both), medians;
- fidelity: each colour kernel against torchvision's (`torchvision.transforms.v2.functional`, what
  `train_transform` uses) image by image with the same per-image factor, max abs error on [0, 1]
  images (what tests/augment/test_batch_color.py checks for ours).

    python benchmarks/augment_kornia.py                  # 64 and 224 px, 15 repeats
    python benchmarks/augment_kornia.py --sizes 224 --repeats 30

kornia is not a dependency: `pip install -c constraints.txt kornia` to run this.

Measured 2026 on the 2-core CPU machine (torch 2.14.1, 2 threads, kornia 0.9.0), 15 repeats:

    speed (images/s, median)    ours      kornia   ours/kornia
    64 px, 512 images           5213        1648        3.16×
    224 px, 64 images            267         228        1.17×

    max abs error vs torchvision    ours       kornia
    brightness                      0          0
    contrast                        0          5.96e-08
    saturation                      5.96e-08   5.96e-08
    hue                             4.77e-07   0.0051
    grayscale                       0          0
    blur                            4.47e-07   0.0071

    random jitter order             per image  one per batch

Verdict: ours wins on both. It is 3.2× faster at 64 px and 1.2× at 224 px, it matches torchvision's
hue and blur to float rounding (kornia's hue formula and its blur kernel differ, by 5e-3 and
7e-3), and it draws the jitter order per image as torchvision's per-image transform does, where
kornia's ColorJitter uses one random order for the whole batch. kornia stays out of pyproject.toml.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.transforms.v2 import functional as TF

from stablerep_pl.augment import batch_color
from stablerep_pl.augment.batch_augment import BatchAugmentation
from stablerep_pl.augment.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentationConfig, blur_kernel_size

BATCH = {64: 512, 224: 64}  # about 6 and 10 MB of uint8 views per call


def kornia_recipe(cfg: AugmentationConfig) -> torch.nn.Module:
    """kornia's augmentations configured to the same recipe (float input in [0, 1])."""
    import kornia.augmentation as K

    k = blur_kernel_size(cfg.image_size)
    return K.AugmentationSequential(
        K.ColorJitter(*cfg.jitter, p=cfg.jitter_p),
        K.RandomGrayscale(p=cfg.grayscale_p),
        K.RandomGaussianBlur((k, k), cfg.blur_sigma, p=cfg.blur_p),
        K.Normalize(mean=torch.tensor(IMAGENET_MEAN), std=torch.tensor(IMAGENET_STD)),
    )


def timed(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(size: int, repeats: int) -> dict[str, float]:
    """Median images/s of each implementation on one batch of uint8 views."""
    cfg = AugmentationConfig(image_size=size)
    n = BATCH[size]
    views = (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    ours, theirs = BatchAugmentation(cfg), kornia_recipe(cfg)
    runs: dict[str, Callable[[], torch.Tensor]] = {
        "ours": lambda: ours(views),
        "kornia": lambda: theirs(views.float().div_(255)),  # kornia takes floats: the cast is its cost
    }
    for fn in runs.values():  # warm-up: thread pools, allocator
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for r in range(repeats):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                times[name].append(timed(runs[name]))
    return {name: n / statistics.median(t) for name, t in times.items()}


def per_image(fn: Callable, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(x[i], float(factors[i])) for i in range(len(x))])


def fidelity(size: int, n: int = 24) -> dict[str, dict[str, float]]:
    """Max abs error of each kernel against torchvision's, image by image, same factors."""
    import kornia.enhance as KE
    import kornia.filters as KF
    from kornia.color import rgb_to_grayscale

    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0] = 0.5  # grey: hue undefined
    x[1, 0], x[1, 1:] = 1.0, 0.0  # a saturated primary
    x[2] = (x[2] * 255).round() / 255  # 8-bit levels, ties between channels
    x[2, 1] = x[2, 0]

    def factors(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n).uniform_(lo, hi, generator=g)

    brightness, contrast, saturation = factors(0.6, 1.4), factors(0.6, 1.4), factors(0.6, 1.4)
    hue, sigma = factors(-0.1, 0.1), factors(0.1, 2.0)
    k = blur_kernel_size(size)
    reference = {
        "brightness": per_image(TF.adjust_brightness, x, brightness),
        "contrast": per_image(TF.adjust_contrast, x, contrast),
        "saturation": per_image(TF.adjust_saturation, x, saturation),
        "hue": per_image(TF.adjust_hue, x, hue),
        "grayscale": TF.rgb_to_grayscale(x, num_output_channels=3),
        "blur": torch.stack([TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2) for i in range(n)]),
    }
    ours = {
        "brightness": batch_color.adjust_brightness_(x.clone(), brightness),
        "contrast": batch_color.adjust_contrast_(x.clone(), contrast),
        "saturation": batch_color.adjust_saturation_(x.clone(), saturation),
        "hue": batch_color.adjust_hue(x, hue),
        "grayscale": batch_color.grayscale(x).expand_as(x),
        "blur": batch_color.gaussian_blur(x, k, sigma),
    }
    kornia = {  # the functions kornia's ColorJitter / RandomGrayscale / RandomGaussianBlur call
        "brightness": KE.adjust_brightness_accumulative(x, brightness),
        "contrast": KE.adjust_contrast_with_mean_subtraction(x, contrast),
        "saturation": KE.adjust_saturation_with_gray_subtraction(x, saturation),
        "hue": KE.adjust_hue(x, hue * 2 * math.pi),  # ColorJitter passes turns × 2π
        "grayscale": rgb_to_grayscale(x).expand_as(x),
        "blur": KF.gaussian_blur2d(x, (k, k), torch.stack([sigma, sigma], dim=1), border_type="reflect"),
    }
    return {
        op: {
            "ours": float((ours[op] - ref).abs().max()),
            "kornia": float((kornia[op] - ref).abs().max()),
        }
        for op, ref in reference.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], choices=sorted(BATCH))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch threads (data workers run with 1)"
    )
    args = parser.parse_args()
    import kornia

    print(f"torch {torch.__version__}, kornia {kornia.__version__}, {os.cpu_count()} CPUs")
    print(f"\n{'speed (images/s, median)':<32}{'ours':>8}{'kornia':>12}{'ours/kornia':>14}")
    wins = {"speed": True, "fidelity": True}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            result = speed(size, args.repeats)
            ratio = result["ours"] / result["kornia"]
            wins["speed"] &= ratio > 1
            label = f"{size} px, {BATCH[size]} images, {threads} thr"
            print(f"{label:<32}{result['ours']:>8.0f}{result['kornia']:>12.0f}{ratio:>13.2f}×")
    print(f"\n{'max abs error vs torchvision':<32}{'ours':<11}{'kornia':<11}(worst over sizes)")
    torch.set_num_threads(max(args.threads))
    errors: dict[str, dict[str, float]] = {}
    for size in args.sizes:
        for op, pair in fidelity(size).items():
            worst = errors.setdefault(op, {"ours": 0.0, "kornia": 0.0})
            for impl, value in pair.items():
                worst[impl] = max(worst[impl], value)
    for op, pair in errors.items():
        wins["fidelity"] &= pair["ours"] <= pair["kornia"]
        print(f"{op:<32}{pair['ours']:<11.3g}{pair['kornia']:<11.3g}")
    print(f"\n{'random jitter order':<32}{'per image':<11}{'one per batch':<11}")
    keep = "ours" if all(wins.values()) else "kornia" if not any(wins.values()) else "mixed: look closer"
    print(f"\nverdict: ours wins speed: {wins['speed']}, fidelity: {wins['fidelity']} → keep {keep}")


if __name__ == "__main__":
    main()
