"""Training-input throughput: ShardDataModule vs a torchvision ImageFolder of the same images.

Both read the same JPEG files (rendered once by the procedural generator), decode them and apply
the same augmentation recipe with the same number of workers; images/s counts augmented images
delivered. ShardDataModule is measured in two of its modes, side by side: `per_image` (torchvision's
transforms on each view, as ImageFolder does) and `batched` (the default: crop per view, then the
photometric half of the recipe once per batch, vectorised).

    python benchmarks/shards.py --captions 1000 --k 6 --workers 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import DataLoader

from stablerep_pl.augment.transforms import AugmentationConfig, train_transform
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.data.shards import ShardDataModule
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards


def write_image_folder(shards: Path, folder: Path) -> int:
    """Unpack the shards' JPEGs into `folder/<key>/<j>.jpg` (one class per caption)."""
    import tarfile

    count = 0
    for shard in sorted(shards.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    key, index, _ = member.name.split(".")
                    (folder / key).mkdir(parents=True, exist_ok=True)
                    (folder / key / f"{index}.jpg").write_bytes(tar.extractfile(member).read())
                    count += 1
    return count


def rate(loader: DataLoader, images_of: Callable[[Any], int]) -> float:
    iterator = iter(loader)
    next(iterator)  # workers started, first batch ready
    start, images = time.perf_counter(), 0
    for batch in iterator:
        images += images_of(batch)
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--k", type=int, default=6, help="images per caption (all used as views)")
    parser.add_argument("--size", type=int, default=96, help="rendered size")
    parser.add_argument("--crop", type=int, default=64, help="training size")
    parser.add_argument("--batch", type=int, default=32, help="captions per batch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        captions = [Caption(caption_key(t), t) for t in procedural_captions(args.captions, seed=0)]
        render_shards(
            ProceduralGenerator(size=args.size), captions, root / "shards", args.k, 100, progress=False
        )
        n_files = write_image_folder(root / "shards", root / "folder")
        last = (args.captions - 1) // 100
        urls = str(root / "shards" / f"shard-{{000000..{last:06d}}}.tar")
        torch.set_num_threads(1)
        rows = []
        for label, aug in [("paper augmentation", AugmentationConfig(image_size=args.crop)),
                           ("decode + crop only", light_augmentation(args.crop))]:  # fmt: skip
            folder = torchvision.datasets.ImageFolder(str(root / "folder"), transform=train_transform(aug))
            loaders = {
                "ImageFolder": DataLoader(
                    folder, batch_size=args.batch * args.k, shuffle=True, num_workers=args.workers,
                    drop_last=True,
                ),
                **{
                    mode: ShardDataModule(
                        urls, views=args.k, batch_size=args.batch, augmentation=aug,
                        num_workers=args.workers, epoch_captions=args.captions, augmentation_mode=mode,
                    ).train_dataloader()
                    for mode in MODES
                },
            }  # fmt: skip
            runs = {name: [] for name in loaders}
            for _ in range(args.repeats):  # interleaved, so slow phases of a shared machine hit all alike
                for name, loader in loaders.items():
                    runs[name].append(rate(loader, images_in))
            rows.append((label, runs))
    print(
        f"{n_files} JPEGs ({args.size} px → {args.crop} px crops), {args.workers} workers, local disk; "
        f"median of {args.repeats} interleaved runs, images/s (ratio = shards / ImageFolder, per run)"
    )
    print(
        f"{'transform':<20}{'ImageFolder':>12}" + "".join(f"{'shards ' + m:>18}{'ratio':>7}" for m in MODES)
    )
    for label, runs in rows:
        cells = ""
        for mode in MODES:
            ratios = [r / f for r, f in zip(runs[mode], runs["ImageFolder"])]
            cells += f"{statistics.median(runs[mode]):>18.0f}{statistics.median(ratios):>6.2f}x"
        print(f"{label:<20}{statistics.median(runs['ImageFolder']):>12.0f}{cells}")
        print(
            f"{'':<20}runs: " + "; ".join(f"{k} " + "/".join(f"{r:.0f}" for r in v) for k, v in runs.items())
        )


def images_in(batch) -> int:
    """Views in an ImageFolder batch `(images, labels)` or a shard batch `{"images": [n, m, ...]}`."""
    return (
        int(batch[0].shape[0])
        if isinstance(batch, list | tuple)
        else int(batch["images"][:, :, 0, 0, 0].numel())
    )


MODES = ("per_image", "batched")


def light_augmentation(crop: int) -> AugmentationConfig:
    """Crop and flip only: isolates reading and decoding from the colour/blur augmentations."""
    return AugmentationConfig(image_size=crop, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


if __name__ == "__main__":
    main()
