"""A guidance sweep in one render vs one render per guidance value (same images, byte for byte).

    python benchmarks/guidance_sweep.py          # tiny random-weight SD on CPU, 4 values

The sweep encodes each batch's prompts once for all values (separate renders encode them once per
value) and reads the captions once; the UNet and VAE work is the same. Prints images/s of both,
interleaved over `--repeats` runs (median), by wall clock and by this process's CPU time (steadier
on a shared machine), and checks that the shards hold the same images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.generation.diffusion import DiffusionGenerator
from stablerep_pl.generation.render import render_shards
from stablerep_pl.generation.sweep import render_sweep

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1] / "tests")
)  # the tiny SD pipeline is a test fixture
from fixtures.tiny_sd import build_tiny_sd_pipeline


def images(folder: Path) -> dict[str, bytes]:
    found = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            found.update(
                {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")}
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.5, 2.0, 4.0, 8.0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--captions", type=int, default=16)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    captions = [Caption(caption_key(t), t) for t in procedural_captions(args.captions, seed=0)]
    pipe = build_tiny_sd_pipeline(sample_size=args.size)
    settings = dict(num_inference_steps=args.steps, output_size=None, device="cpu", batch_size=args.batch)
    render = dict(images_per_caption=args.k, shard_size=args.captions, image_format="png", progress=False)
    total = len(captions) * args.k * len(args.guidance)
    DiffusionGenerator.from_pipeline(pipe, **settings).generate([captions[0].text], 1)  # warm-up
    rates: dict[str, list[float]] = {"sweep": [], "separate": [], "sweep_cpu": [], "separate_cpu": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            out = Path(tmp) / str(repeat)
            start, cpu = time.perf_counter(), time.process_time()
            render_sweep(DiffusionGenerator.from_pipeline(pipe, **settings), captions, out / "sweep",
                         [{"guidance_scale": g} for g in args.guidance], **render)  # fmt: skip
            rates["sweep"].append(total / (time.perf_counter() - start))
            rates["sweep_cpu"].append(total / (time.process_time() - cpu))
            start, cpu = time.perf_counter(), time.process_time()
            for g in args.guidance:
                generator = DiffusionGenerator.from_pipeline(pipe, **settings, guidance_scale=g)
                render_shards(generator, captions, out / "separate" / f"guidance_{g:g}", **render)
            rates["separate"].append(total / (time.perf_counter() - start))
            rates["separate_cpu"].append(total / (time.process_time() - cpu))
            same = all(images(out / "sweep" / f"guidance_{g:g}") == images(out / "separate" / f"guidance_{g:g}")
                       for g in args.guidance)  # fmt: skip
            print(f"run {repeat}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in rates.items())
                  + f", identical images: {same}")  # fmt: skip
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"median of {args.repeats} ({len(args.guidance)} values × {len(captions)} captions × {args.k}): "
          f"wall: sweep {med['sweep']:.1f} vs separate {med['separate']:.1f} img/s "
          f"({med['sweep'] / med['separate']:.2f}×); CPU time: sweep {med['sweep_cpu']:.1f} vs separate "
          f"{med['separate_cpu']:.1f} img/s ({med['sweep_cpu'] / med['separate_cpu']:.2f}×)")  # fmt: skip


if __name__ == "__main__":
    main()
