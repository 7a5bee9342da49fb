"""Train from webdataset shards written by `stablerep render` (same batches as GeneratorDataModule).

Two ways to split the data, both with exact, equal epoch lengths on every rank (no DDP hang):
- `resampled=True` (default, for training at scale): every rank and worker draws shards with
  replacement from its own seeded stream, so any number of nodes/workers works with any shard count.
- `resampled=False`: shards are split disjointly by rank, then by worker; with one rank an epoch is
  exactly one pass. With several ranks each rank cycles over its own shards and the epoch is cut at
  the same number of batches everywhere; with equal shards and `shuffle_buffer=0` that is exactly one
  pass per rank (a shuffle buffer mixes samples across the pass boundary, as buffers do).
Caption ids are a 62-bit hash of the sample key: the same caption has the same id on every rank.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import braceexpand
import lightning as L
import torch
import webdataset as wds
from torch.utils.data import DataLoader, get_worker_info
from torchvision.io import ImageReadMode, decode_image

from stablerep_pl.data.augmentation_modes import AugmentationMode, AugmentationModeMixin
from stablerep_pl.data.collate import CaptionBatchCollate
from stablerep_pl.data.sampling import choose_views
from stablerep_pl.data.transforms import AugmentationConfig

IMAGE_KEY = re.compile(r"^(\d+)\.(jpg|jpeg|png|webp)$")


def caption_id(key: str) -> int:
    """Stable 62-bit integer id of a sample key."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 2


def expand_urls(urls: str | list[str]) -> list[str]:
    """Brace patterns (`shard-{000000..000099}.tar`) and lists; any URL webdataset opens (`pipe:` …)."""
    items = [urls] if isinstance(urls, str) else list(urls)
    expanded = [u for item in items for u in braceexpand.braceexpand(item)]
    if not expanded:
        raise ValueError("no shard URLs given")
    return expanded


class SampleDecoder:
    """Raw tar sample → `{"images": [m, 3, S, S], "caption_ids", "caption"}`, or None to skip it."""

    def __init__(
        self, views: int, transform: Callable, strict: bool = False, distinct_views: bool = True
    ) -> None:
        self.views, self.transform, self.strict, self.distinct_views = (
            views,
            transform,
            strict,
            distinct_views,
        )
        self.skipped = 0

    def skip(self, key: str, reason: str) -> None:
        if self.strict:
            raise ValueError(f"sample {key}: {reason} (strict mode)")
        self.skipped += 1
        if self.skipped <= 10 or self.skipped % 1000 == 0:
            warnings.warn(f"skipping sample {key}: {reason} ({self.skipped} skipped so far)", stacklevel=2)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        key = sample.get("__key__", "?")
        names = sorted((k for k in sample if IMAGE_KEY.match(k)), key=lambda k: int(k.split(".")[0]))
        if len(names) < (self.views if self.distinct_views else 1):
            self.skip(key, f"{len(names)} images, need {self.views}")
            return None
        chosen = choose_views(len(names), self.views, self.distinct_views)
        images = []
        for i in chosen:
            try:
                image = decode_rgb(sample[names[i]])
            except (RuntimeError, OSError, ValueError) as err:
                self.skip(key, f"undecodable {names[i]}: {err}")
                return None
            images.append(self.transform(image))
        text = sample.get("txt", b"")
        return {
            "images": torch.stack(images),
            "caption_ids": torch.tensor(caption_id(key), dtype=torch.long),
            "caption": text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text),
        }


def decode_rgb(data: bytes) -> torch.Tensor:
    """JPEG/PNG/WebP bytes → uint8 `[3, H, W]` with torchvision's decoders (about 2× PIL's speed)."""
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def _cycle(urls: list[str], seed: int) -> Callable[[], Iterator[dict[str, str]]]:
    """Endless, per-pass reshuffled stream over a fixed list of shard URLs."""

    def stream() -> Iterator[dict[str, str]]:
        generator, epoch = torch.Generator(), 0
        while True:
            generator.manual_seed(seed * 1_000_003 + epoch)
            for i in torch.randperm(len(urls), generator=generator).tolist():
                yield {"url": urls[i]}
            epoch += 1

    return stream


class ShardDataModule(AugmentationModeMixin, L.LightningDataModule):
    """Batches `images [n, m, 3, S, S]`, `caption_ids [n]`, `caption` (n strings) from shards,
    plus CLIP `tokens [n, text_tokens]` for StableRep+ when `text_tokens` is set.

    `epoch_captions` is the number of captions per epoch across all ranks; when omitted it is read
    from `_info.json` beside local shards. `batch_size` counts captions per device.

    `augmentation_mode`: `batched` (default), `on_device` or `per_image`, see `augmentation_modes.py`.
    """

    def __init__(
        self,
        urls: str | list[str],
        views: int = 6,
        batch_size: int = 32,
        augmentation: AugmentationConfig | None = None,
        epoch_captions: int | None = None,
        resampled: bool = True,
        shuffle_buffer: int = 1000,
        num_workers: int = 4,
        seed: int = 0,
        strict: bool = False,
        pin_memory: bool = False,
        text_tokens: int | None = None,
        distinct_views: bool = True,
        augmentation_mode: AugmentationMode = "batched",
    ) -> None:
        super().__init__()
        self.init_augmentation(augmentation, augmentation_mode)
        self.urls = expand_urls(urls)
        self.views, self.batch_size = views, batch_size
        self.epoch_captions = epoch_captions
        self.resampled, self.shuffle_buffer = resampled, shuffle_buffer
        self.num_workers, self.seed, self.strict, self.pin_memory = num_workers, seed, strict, pin_memory
        self.rank, self.world_size = 0, 1
        self.collate = CaptionBatchCollate(text_tokens, self.collate_augmentation())
        self.distinct_views = distinct_views

    @property
    def images_per_batch(self) -> int:
        return self.batch_size * self.views

    def resolve_epoch_captions(self) -> int:
        if self.epoch_captions is not None:
            return self.epoch_captions
        info = Path(self.urls[0]).parent / "_info.json"
        if not info.exists():
            raise ValueError(f"set epoch_captions: no {info} to read the caption count from")
        return int(json.loads(info.read_text())["num_captions"])

    def batches_per_rank(self) -> int:
        workers = max(1, self.num_workers)
        epoch_captions = self.resolve_epoch_captions()
        per_rank = epoch_captions // (self.world_size * self.batch_size)
        per_rank = per_rank // workers * workers  # every worker yields the same number of batches
        if per_rank < 1:
            raise ValueError(
                f"epoch of {epoch_captions} captions is too short for {self.world_size} ranks × "
                f"{workers} workers × batch {self.batch_size}"
            )
        return per_rank

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size

    def worker_seed(self) -> int:
        info = get_worker_info()
        return self.seed * 1_000_003 + self.rank * 1009 + (info.id if info else 0)

    def build_pipeline(self) -> wds.DataPipeline:
        workers = max(1, self.num_workers)
        if self.resampled:
            source: list[Any] = [wds.ResampledShards(self.urls, seed=self.seed, worker_seed=self.worker_seed,
                                                     deterministic=True, empty_check=False)]  # fmt: skip
        else:
            mine = self.urls[self.rank :: self.world_size]
            if not mine:
                raise ValueError(
                    f"{len(self.urls)} shards cannot feed {self.world_size} ranks without resampling"
                )
            if self.world_size > 1:
                source = [_cycle(mine, self.seed + self.rank), wds.split_by_worker]
            else:
                source = [wds.SimpleShardList(mine), wds.split_by_worker]
        handler = wds.reraise_exception if self.strict else wds.warn_and_continue
        stages = [
            *source,
            wds.tarfile_to_samples(handler=handler),
            *(
                [wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100))]
                if self.shuffle_buffer > 1
                else []
            ),
            wds.map(
                SampleDecoder(self.views, self.view_transform(), self.strict, self.distinct_views),
                handler=handler,
            ),
            wds.select(lambda item: item is not None),
            wds.batched(self.batch_size, collation_fn=self.collate, partial=False),
        ]
        pipeline = wds.DataPipeline(*stages)
        one_pass = not self.resampled and self.world_size == 1 and self.epoch_captions is None
        if one_pass:
            return pipeline
        per_rank = self.batches_per_rank()
        with warnings.catch_warnings():  # it notes that __len__ is informative; with_epoch sets the length
            warnings.simplefilter("ignore", UserWarning)
            return pipeline.with_epoch(per_rank // workers).with_length(per_rank)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.build_pipeline(),
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,  # resampled streams advance their epoch per worker
            pin_memory=self.pin_memory,
        )
