"""Training-input throughput: ShardDataModule vs a torchvision ImageFolder of the same images.

Both read the same JPEG files (rendered once by the procedural generator), decode them and apply
the same augmentation with the same number of workers; images/s counts augmented images delivered.

    python benchmarks/shards.py --captions 1000 --k 6 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

from stablerep_pl.data.caption_sources import Caption
from stablerep_pl.data.captions import procedural_captions
from stablerep_pl.data.generators import caption_key
from stablerep_pl.data.generators.procedural import ProceduralGenerator
from stablerep_pl.data.render import render_shards
from stablerep_pl.data.shards import ShardDataModule
from stablerep_pl.data.transforms import AugmentationConfig, train_transform


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


def rate(loader: DataLoader, images_of) -> float:
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
            folder_loader = DataLoader(
                folder, batch_size=args.batch * args.k, shuffle=True, num_workers=args.workers, drop_last=True
            )
            dm = ShardDataModule(
                urls, views=args.k, batch_size=args.batch, augmentation=aug, num_workers=args.workers,
                epoch_captions=args.captions,
            )  # fmt: skip
            folder_rate = rate(folder_loader, lambda b: int(b[0].shape[0]))
            shard_rate = rate(
                dm.train_dataloader(), lambda b: int(b["images"].shape[0] * b["images"].shape[1])
            )
            rows.append((label, folder_rate, shard_rate))
    print(f"{n_files} JPEGs ({args.size} px → {args.crop} px crops), {args.workers} workers, local disk")
    print(f"{'transform':<22}{'ImageFolder img/s':>19}{'shards img/s':>14}{'ratio':>8}")
    for label, folder_rate, shard_rate in rows:
        print(f"{label:<22}{folder_rate:>19.0f}{shard_rate:>14.0f}{shard_rate / folder_rate:>7.2f}x")


def light_augmentation(crop: int) -> AugmentationConfig:
    """Crop and flip only: isolates reading and decoding from the colour/blur augmentations."""
    return AugmentationConfig(image_size=crop, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


if __name__ == "__main__":
    main()
