"""Generation throughput: captions batched together vs one caption per pipeline call.

    python benchmarks/generation.py                              # tiny random-weight SD on CPU
    python benchmarks/generation.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --device cuda --size 512 --steps 50 --k 10 --batch 40    # the paper's setting on a GPU

Both runs render the same images (per-image seeds), so only the batching differs. Freed host memory
is kept in the process as `stablerep` keeps it (`stablerep_pl.distributed.host_memory`);
`--malloc default` leaves glibc's defaults, under which the batched calls fault in fresh pages for their
activations (the page-fault column). Then the embedded procedural generator's images/s at 32, 64 and
224 px (`--procedural_sizes`), one thread, default diversity 0.5 and supersampling 2.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.distributed.host_memory import keep_freed_host_memory
from stablerep_pl.generation.base import ImageGenerator
from stablerep_pl.generation.diffusion import DiffusionGenerator
from stablerep_pl.generation.procedural import ProceduralGenerator

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1] / "tests")
)  # the tiny SD pipeline is a test fixture
from fixtures.tiny_sd import build_tiny_sd_pipeline


def make(args: argparse.Namespace, batch_size: int) -> DiffusionGenerator:
    settings = dict(
        num_inference_steps=args.steps, output_size=None, device=args.device, batch_size=batch_size,
        height=args.size, width=args.size, guidance_scale=2.0,
    )  # fmt: skip
    if args.model == "tiny":
        return DiffusionGenerator.from_pipeline(build_tiny_sd_pipeline(sample_size=args.size), **settings)
    return DiffusionGenerator(model=args.model, dtype=args.dtype, **settings)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved(
    generators: list[ImageGenerator], captions: list[str], k: int, repeats: int
) -> tuple[list[list[float]], list[list], list[list[int]]]:
    """Images/s and minor page faults of each generator per repeat, the generators taking turns within
    each repeat (this machine's speed drifts by ±20 %: a ratio within one repeat is steadier than
    best-of-N apart)."""
    for generator in generators:
        generator.generate(captions[:1], 1)  # warm-up (weights, kernels)
    rates: list[list[float]] = [[] for _ in generators]
    faults: list[list[int]] = [[] for _ in generators]
    images: list[list] = [[] for _ in generators]
    for _ in range(repeats):
        for i, generator in enumerate(generators):
            before, start = minor_faults(), time.perf_counter()
            images[i] = generator.generate(captions, k)
            rates[i].append(len(captions) * k / (time.perf_counter() - start))
            faults[i].append(minor_faults() - before)
    return rates, images, faults


def procedural_rate(size: int, captions: list[str], k: int, repeats: int) -> float:
    """Images/s of the procedural generator at `size` px (best of `repeats`, after a warm-up)."""
    [rates], _, _ = interleaved([ProceduralGenerator(size=size)], captions, k, repeats)
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help="'tiny' or a hub id / local diffusers folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--captions", type=int, default=16)
    parser.add_argument("--k", type=int, default=2, help="images per caption")
    parser.add_argument("--batch", type=int, default=32, help="images per pipeline call when batching")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--malloc", choices=("kept", "default"), default="kept",
        help="kept: freed host memory stays in the process, as under `stablerep`; default: glibc's own",
    )  # fmt: skip
    parser.add_argument("--procedural_sizes", type=int, nargs="*", default=[32, 64, 224])
    args = parser.parse_args()
    kept = args.malloc == "kept" and keep_freed_host_memory()
    captions = procedural_captions(args.captions, seed=0)
    generators = [make(args, batch_size=args.k), make(args, batch_size=args.batch)]
    (one_rates, batch_rates), (one_images, batch_images), (one_faults, batch_faults) = interleaved(
        generators, captions, args.k, args.repeats
    )
    diff = max(
        float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())
        for r, s in zip(one_images, batch_images) for a, b in zip(r, s)
    )  # fmt: skip
    ratios = [b / o for o, b in zip(one_rates, batch_rates)]
    print(
        f"model={args.model} device={args.device} size={args.size} steps={args.steps} k={args.k} "
        f"threads={torch.get_num_threads()} malloc={'kept' if kept else 'default'}"
    )
    print(
        f"{'mode (median of ' + str(args.repeats) + ' interleaved repeats)':<44}{'images/s':>10}{'page faults':>13}"
    )
    for name, rates, faults in (
        ("one caption per call", one_rates, one_faults),
        (f"batched ({args.batch} images/call)", batch_rates, batch_faults),
    ):
        print(f"{name:<44}{statistics.median(rates):>10.2f}{statistics.median(faults):>13.0f}")
    print(
        f"speed-up batched / one-at-a-time: median {statistics.median(ratios):.2f}x "
        f"(per repeat {', '.join(f'{r:.2f}' for r in ratios)}; max pixel difference {diff:.0f}/255)"
    )
    if args.procedural_sizes:
        torch.set_num_threads(1)
        print(f"\nprocedural generator, one thread, {len(captions)} captions x 8 images")
        print(f"{'size':<8}{'images/s':>10}")
        for size in args.procedural_sizes:
            print(f"{size:<8}{procedural_rate(size, captions, 8, args.repeats):>10.0f}")


if __name__ == "__main__":
    main()
