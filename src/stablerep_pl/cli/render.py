"""`stablerep render`: captions file → webdataset shards with any generator from a YAML config."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from jsonargparse import ActionConfigFile

from stablerep_pl.captions.sources import open_captions
from stablerep_pl.cli.errors import SubcommandParser
from stablerep_pl.generation.base import ImageGenerator
from stablerep_pl.generation.render import render_shards
from stablerep_pl.generation.sweep import render_sweep, sweep_settings


def render(
    generator: ImageGenerator,
    captions: str,
    output: str,
    images_per_caption: int = 10,
    shard_size: int = 1000,
    image_format: str = "jpg",
    quality: int = 95,
    prefix: str = "shard",
    column: str = "caption",
    strict: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    guidance_scales: list[float] | None = None,
    diversities: list[float] | None = None,
    steps_list: list[int] | None = None,
    schedulers: list[str] | None = None,
) -> None:
    """Render `images_per_caption` images for every caption of `captions` into shards under `output`.

    Args:
        generator: any ImageGenerator (class_path + init_args), e.g. the procedural or diffusion one.
        captions: caption file (.txt one per line, .csv/.tsv, .jsonl, .parquet).
        output: shard directory; re-running resumes (complete shards are kept, partial ones redone).
        images_per_caption: k images per caption, each with its own seed.
        shard_size: captions per shard.
        image_format: jpg, png or webp.
        quality: jpg/webp quality.
        prefix: shard file prefix (`{prefix}-{index:06d}.tar`).
        column: caption column/field of csv, tsv, jsonl and parquet files.
        strict: raise on empty/undecodable captions instead of skipping and counting them.
        rank: this worker's rank (default: $RANK from torchrun, else 0).
        world_size: number of workers (default: $WORLD_SIZE from torchrun, else 1).
        progress: show a progress bar with images/s and ETA.
        guidance_scales: sweep: one shard set per guidance scale, `OUTPUT/guidance_<g>/`, from one
            pass over the captions with the same seeds (the procedural generator maps g onto
            diversity 1/g). Several sweep lists render every combination.
        diversities: sweep of the procedural generator's diversity (`OUTPUT/diversity_<d>/`).
        steps_list: sweep of the diffusion step count (`OUTPUT/steps_<n>/`).
        schedulers: sweep of diffusers scheduler classes (`OUTPUT/scheduler_<name>/`).
    """
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    source = open_captions(captions, strict=strict, column=column)
    records = source.load()
    print(f"captions: {source.stats.summary()}", flush=True)
    for problem in source.stats.problems[:5]:
        print(f"  skipped: {problem}")
    options = dict(
        images_per_caption=images_per_caption, shard_size=shard_size, image_format=image_format,
        quality=quality, prefix=prefix, rank=rank, world_size=world_size, progress=progress,
    )  # fmt: skip
    if guidance_scales is None and diversities is None and steps_list is None and schedulers is None:
        print(json.dumps(asdict(render_shards(generator, records, output, **options))), flush=True)
        return
    settings = sweep_settings(guidance_scales, diversities, steps_list, schedulers)
    reports = render_sweep(generator, records, output, settings, **options)
    print(json.dumps({folder: asdict(report) for folder, report in reports.items()}), flush=True)


EXAMPLE = (
    "stablerep render --config configs/render/procedural.yaml --captions captions.txt --output shards/mine\n"
    "  stablerep render --config configs/render/sd15.yaml --captions c.tsv --output shards/sweep "
    "--guidance_scales '[1.5, 2, 4, 8]'"
)


def build_parser() -> SubcommandParser:
    parser = SubcommandParser(prog="stablerep render", description=__doc__, example=EXAMPLE)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_function_arguments(render, as_positional=False)
    return parser


def main(argv: list[str]) -> None:
    parser = build_parser()
    config = parser.parse_args(argv)
    objects = parser.instantiate_classes(config)
    render(**{k: v for k, v in vars(objects).items() if k != "config"})
