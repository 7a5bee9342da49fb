"""Generator → webdataset shards, sharded across ranks and resumable without loss or duplication.

Shard i holds captions [i·S, (i+1)·S) of the caption list; rank r writes the shards with
i ≡ r (mod world size). A shard is written as `NAME.tar.tmp` and renamed when complete, so a
killed run leaves only complete shards plus at most one partial file per rank; re-running skips
complete shards untouched and redoes partial ones. `_render.json` pins the settings: a re-run with
different captions, shard size or generator is refused instead of silently mixing data.
Each sample is one caption: `key.0.jpg … key.{k-1}.jpg`, `key.txt`, `key.json` (provenance).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    provenance = {**generator.provenance(), "package_version": stablerep_pl.__version__}
    settings = {
        "captions_sha256": captions_digest(captions), "num_captions": len(captions),
        "images_per_caption": images_per_caption, "shard_size": shard_size, "image_format": image_format,
        "prefix": prefix, "generator": provenance,
    }  # fmt: skip
    check_manifest(output, settings)

    num_shards = (len(captions) + shard_size - 1) // shard_size
    mine = list(range(rank, num_shards, world_size))
    todo = [i for i in mine if not (output / shard_name(prefix, i)).exists()]
    for stale in output.glob(f"{prefix}-*.tar.tmp"):
        if int(stale.name[len(prefix) + 1 :].split(".")[0]) in todo:
            stale.unlink()
    images_todo = sum(len(captions[i * shard_size : (i + 1) * shard_size]) for i in todo) * images_per_caption
    start, written = time.perf_counter(), 0
    captions_per_call = max(1, generator.batch_size // images_per_caption)  # fill the generator's batch
    bar = tqdm(total=images_todo, unit="img", desc=f"render rank {rank}", disable=not progress, smoothing=0.1)
    for index in todo:
        chunk = captions[index * shard_size : (index + 1) * shard_size]
        final = output / shard_name(prefix, index)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as stream, wds.TarWriter(stream, mtime=FIXED_MTIME) as sink:
            for batch_start in range(0, len(chunk), captions_per_call):
                group = chunk[batch_start : batch_start + captions_per_call]
                images = generator.generate(
                    [c.text for c in group], images_per_caption, [c.key for c in group]
                )
                for caption, pictures in zip(group, images):
                    sink.write(sample(caption, pictures, generator, provenance, image_format, quality))
                bar.update(len(group) * images_per_caption)
            written += len(chunk)
        os.replace(tmp, final)
    bar.close()
    report = RenderReport(
        shards_total=num_shards, shards_written=len(todo), shards_skipped=len(mine) - len(todo),
        captions_written=written, images_written=written * images_per_caption,
        seconds=round(time.perf_counter() - start, 3),
    )  # fmt: skip
    write_info(output, report, rank, world_size, num_shards, prefix, settings)
    return report


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
    shard_size = int(settings["shard_size"])
    """Per-rank report, and `_info.json` once every shard exists (whichever rank finishes last)."""
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
