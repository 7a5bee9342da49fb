"""On-the-fly input rate per epoch, with and without `CachedGenerator`.

    python benchmarks/cache.py                       # procedural, the quickstart's data settings
    python benchmarks/cache.py --generator tiny_sd   # tiny random-weight Stable Diffusion, 10 steps

The same data module (k images per caption, m views drawn per step, augmentation in the training
process) is read for `--epochs` epochs with the plain generator and with the cached one, taking turns
epoch by epoch; images/s per epoch are printed side by side. Epoch 0 renders in both; afterwards the
cache renders only the images no earlier epoch drew. The batches are the same (tests/generation/test_cache.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from stablerep_pl.augment.transforms import AugmentationConfig
from stablerep_pl.data.on_the_fly import GeneratorDataModule
from stablerep_pl.generation.base import ImageGenerator
from stablerep_pl.generation.cache import CachedGenerator
from stablerep_pl.generation.procedural import ProceduralGenerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny SD pipeline fixture


def make_generator(name: str) -> ImageGenerator:
    if name == "procedural":
        return ProceduralGenerator(size=32, diversity=0.0)
    from fixtures.tiny_sd import build_tiny_sd_pipeline
    from stablerep_pl.generation.diffusion import DiffusionGenerator

    return DiffusionGenerator.from_pipeline(
        build_tiny_sd_pipeline(sample_size=32), num_inference_steps=10, output_size=None, device="cpu",
        batch_size=32, height=32, width=32,
    )  # fmt: skip


def loader(generator: ImageGenerator, args: argparse.Namespace):
    dm = GeneratorDataModule(
        generator, num_captions=args.captions, images_per_caption=args.k, views=args.m,
        batch_size=args.batch, num_workers=0, augmentation=AugmentationConfig(image_size=32, min_scale=0.5),
        augmentation_mode="batched", seed=0,
    )  # fmt: skip
    dm.setup("fit")
    return dm.train_dataloader()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generator", choices=["procedural", "tiny_sd"], default="procedural")
    parser.add_argument("--captions", type=int, default=1024)
    parser.add_argument("--k", type=int, default=10, help="images per caption")
    parser.add_argument("--m", type=int, default=4, help="views per caption per step")
    parser.add_argument("--batch", type=int, default=64, help="captions per step")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if args.generator == "tiny_sd" and args.captions == 1024:
        args.captions, args.k, args.m, args.batch = 64, 4, 2, 16
    torch.set_num_threads(1)
    cached = CachedGenerator(make_generator(args.generator))
    loaders = {"plain": loader(make_generator(args.generator), args), "cached": loader(cached, args)}
    print(
        f"{args.generator}: {args.captions} captions, k={args.k}, m={args.m}, {args.batch} captions/step, 1 thread"
    )
    print(f"{'epoch':<7}{'plain img/s':>13}{'cached img/s':>14}{'ratio':>8}{'rendered (cached)':>20}")
    for epoch in range(args.epochs):
        rates = {}
        for name, batches in loaders.items():
            start, images = time.perf_counter(), 0
            for batch in batches:
                images += batch["images"].shape[0] * batch["images"].shape[1]
            rates[name] = images / (time.perf_counter() - start)
        ratio = rates["cached"] / rates["plain"]
        print(f"{epoch:<7}{rates['plain']:>13.0f}{rates['cached']:>14.0f}{ratio:>7.2f}x{cached.rendered:>20}")


if __name__ == "__main__":
    main()
