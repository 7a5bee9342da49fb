"""Generator → webdataset shards, sharded across ranks and resumable without loss or duplication.

Shard i holds captions [i·S, (i+1)·S) of the caption list; rank r writes the shards with
i ≡ r (mod world size). A shard is written as `NAME.tar.tmp` and renamed when complete, so a
killed run leaves only complete shards plus at most one partial file per rank; re-running skips
complete shards untouched and redoes partial ones. `_render.json` pins the settings: a re-run with
different captions, shard size or generator is refused instead of silently mixing data.
Each sample is one caption: `key.0.jpg … key.{k-1}.jpg`, `key.txt`, `key.json` (provenance).

`render_targets` writes several shard sets in one pass over the captions, one per setting of a
sweep (`sweep.py`): shard i of every set is rendered together, each caption group under all the
settings that still lack that shard, and each set keeps its own tmp+rename, `_render.json` guard
and `_info.json`, so a set that is complete is skipped and a partial shard is redone alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image
from tqdm.auto import tqdm

import stablerep_pl
from stablerep_pl.captions.sources import Caption
from stablerep_pl.generation.base import ImageGenerator

IMAGE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
FIXED_MTIME = 1_700_000_000  # reproducible tar headers


@dataclass
class RenderReport:
    shards_total: int
    shards_written: int
    shards_skipped: int
    captions_written: int
    images_written: int
    seconds: float


@dataclass(frozen=True)
class RenderTarget:
    """One shard set: `output` rendered by `generator.with_settings(**overrides)` (`{}`: as is)."""

    output: Path
    overrides: dict[str, Any] = field(default_factory=dict)


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def encode_image(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt in {"jpg", "webp"} else {}
    image.convert("RGB").save(buffer, format=IMAGE_FORMATS[fmt], **options)
    return buffer.getvalue()


def captions_digest(captions: Sequence[Caption]) -> str:
    digest = hashlib.sha256()
    for caption in captions:
        digest.update(f"{caption.key}\t{caption.text}\n".encode())
    return digest.hexdigest()


def check_manifest(output: Path, settings: dict[str, Any]) -> None:
    """Write `_render.json` on the first run; refuse a re-run whose settings differ."""
    path = output / "_render.json"
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in settings if previous.get(k) != settings[k])
        if changed:
            raise ValueError(
                f"{output} was rendered with different settings ({', '.join(changed)}); "
                "use a new --output or the original settings to resume"
            )
        return
    atomic_write(path, json.dumps(settings, indent=2, sort_keys=True))


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def render_shards(
    generator: ImageGenerator,
    captions: Sequence[Caption],
    output: str | Path,
    images_per_caption: int = 10,
    shard_size: int = 1000,
    image_format: str = "jpg",
    quality: int = 95,
    prefix: str = "shard",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> RenderReport:
    """Render this rank's shards of `captions` into `output` (see the module docstring)."""
    [report] = render_targets(
        generator, captions, [RenderTarget(Path(output))], images_per_caption, shard_size, image_format,
        quality, prefix, rank, world_size, progress,
    )  # fmt: skip
    return report


def render_targets(
    generator: ImageGenerator,
    captions: Sequence[Caption],
    targets: Sequence[RenderTarget],
    images_per_caption: int = 10,
    shard_size: int = 1000,
    image_format: str = "jpg",
    quality: int = 95,
    prefix: str = "shard",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> list[RenderReport]:
    """This rank's shards of every target, in one pass over `captions` (see the module docstring)."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    if shard_size < 1 or images_per_caption < 1:
        raise ValueError("shard_size and images_per_caption must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if not captions:
        raise ValueError("no captions to render")
    bad = [c.key for c in captions if "." in c.key or "/" in c.key]
    if bad:
        raise ValueError(f"caption keys may not contain '.' or '/' (webdataset splits on them): {bad[:3]}")
    if len({Path(t.output).resolve() for t in targets}) != len(targets):
        raise ValueError("two render targets share one output folder")
    k = images_per_caption
    num_shards = (len(captions) + shard_size - 1) // shard_size
    mine = list(range(rank, num_shards, world_size))
    digest = captions_digest(captions)
    plans = [
        _plan(generator, digest, len(captions), t, k, shard_size, image_format, prefix, mine) for t in targets
    ]
    images_todo = sum(len(captions[i * shard_size : (i + 1) * shard_size]) * k for p in plans for i in p.todo)
    start, captions_per_call = time.perf_counter(), max(1, generator.batch_size // k)  # fill a batch
    desc = f"render rank {rank}" + (f" × {len(targets)} settings" if len(targets) > 1 else "")
    bar = tqdm(total=images_todo, unit="img", desc=desc, disable=not progress, smoothing=0.1)
    for index in mine:
        pending = [p for p in plans if index in p.todo]
        if not pending:
            continue
        chunk = captions[index * shard_size : (index + 1) * shard_size]
        finals = [p.output / shard_name(prefix, index) for p in pending]
        tmps = [f.with_name(f.name + ".tmp") for f in finals]
        with contextlib.ExitStack() as stack:
            sinks = [stack.enter_context(wds.TarWriter(stack.enter_context(open(t, "wb")), mtime=FIXED_MTIME))
                     for t in tmps]  # fmt: skip
            for batch_start in range(0, len(chunk), captions_per_call):
                group = chunk[batch_start : batch_start + captions_per_call]
                rendered = generator.generate_variants(
                    [c.text for c in group], k, [c.key for c in group], [p.overrides for p in pending]
                )
                for plan, sink, images in zip(pending, sinks, rendered):
                    for caption, pictures in zip(group, images):
                        sink.write(
                            sample(caption, pictures, generator, plan.provenance, image_format, quality)
                        )
                bar.update(len(group) * k * len(pending))
        for plan, tmp, final in zip(pending, tmps, finals):
            os.replace(tmp, final)
            plan.written += len(chunk)
    bar.close()
    seconds = round(time.perf_counter() - start, 3)
    reports = []
    for plan in plans:
        report = RenderReport(
            shards_total=num_shards, shards_written=len(plan.todo), shards_skipped=len(mine) - len(plan.todo),
            captions_written=plan.written, images_written=plan.written * k, seconds=seconds,
        )  # fmt: skip
        write_info(plan.output, report, rank, world_size, num_shards, prefix, plan.settings)
        reports.append(report)
    return reports


@dataclass
class _Plan:
    output: Path
    overrides: dict[str, Any]
    provenance: dict[str, Any]
    settings: dict[str, Any]
    todo: list[int]
    written: int = 0


def _plan(
    generator: ImageGenerator, digest: str, num_captions: int, target: RenderTarget, images_per_caption: int,
    shard_size: int, image_format: str, prefix: str, mine: list[int],
) -> _Plan:  # fmt: skip
    """Check a target's settings against its `_render.json`; list its missing shards; clear their tmps."""
    output = Path(target.output)
    output.mkdir(parents=True, exist_ok=True)
    configured = generator.with_settings(**target.overrides) if target.overrides else generator
    provenance = {**configured.provenance(), "package_version": stablerep_pl.__version__}
    if target.overrides:
        provenance["sweep"] = dict(target.overrides)
    settings = {
        "captions_sha256": digest, "num_captions": num_captions,
        "images_per_caption": images_per_caption, "shard_size": shard_size, "image_format": image_format,
        "prefix": prefix, "generator": provenance,
    }  # fmt: skip
    check_manifest(output, settings)
    todo = [i for i in mine if not (output / shard_name(prefix, i)).exists()]
    for stale in output.glob(f"{prefix}-*.tar.tmp"):
        if int(stale.name[len(prefix) + 1 :].split(".")[0]) in todo:
            stale.unlink()
    return _Plan(output, dict(target.overrides), provenance, settings, todo)


def sample(
    caption: Caption, images: Sequence[Image.Image], generator: ImageGenerator,
    provenance: dict[str, Any], image_format: str, quality: int,
) -> dict[str, Any]:  # fmt: skip
    record = {
        **provenance, "key": caption.key, "caption": caption.text,
        "seeds": [generator.seed_for(caption.key, j) for j in range(len(images))],
    }  # fmt: skip
    out: dict[str, Any] = {
        "__key__": caption.key,
        "txt": caption.text,
        "json": json.dumps(record, sort_keys=True),
    }
    for j, image in enumerate(images):
        out[f"{j}.{image_format}"] = encode_image(image, image_format, quality)
    return out


def write_info(
    output: Path, report: RenderReport, rank: int, world_size: int, num_shards: int, prefix: str,
    settings: dict[str, Any],
) -> None:  # fmt: skip
    """Per-rank report, and `_info.json` once every shard exists (whichever rank finishes last)."""
    shard_size = int(settings["shard_size"])
    atomic_write(
        output / f"_info.rank{rank:05d}-of-{world_size:05d}.json", json.dumps(asdict(report), indent=2)
    )
    shards = sorted(output.glob(f"{prefix}-*.tar"))
    if len(shards) < num_shards:
        return
    info = {
        "num_shards": num_shards, "num_captions": settings["num_captions"],
        "images_per_caption": settings["images_per_caption"],
        "num_images": settings["num_captions"] * settings["images_per_caption"],
        "shards": [p.name for p in shards], "bytes": sum(p.stat().st_size for p in shards),
        "shard_captions": {
            shard_name(prefix, i): min(shard_size, settings["num_captions"] - i * shard_size)
            for i in range(num_shards)
        },
        "generator": settings["generator"],
    }  # fmt: skip
    atomic_write(output / "_info.json", json.dumps(info, indent=2))
