"""Train from webdataset shards written by `stablerep render` (same batches as GeneratorDataModule).

Two ways to split the data, both with exact, equal epoch lengths on every rank (no DDP hang):
- `resampled=True` (default, for training at scale): every rank and worker draws shards with
  replacement from its own seeded stream, so any number of nodes/workers works with any shard count.
- `resampled=False`: shards are split disjointly by rank, then by worker; with one rank an epoch is
  exactly one pass. With several ranks each rank cycles over its own shards and the epoch is cut at
  the same number of batches everywhere; with equal shards and `shuffle_buffer=0` that is exactly one
  pass per rank (a shuffle buffer mixes samples across the pass boundary, as buffers do).
Every draw (shard order, shuffle, views, augmentation) is seeded, so the same seed gives the same
batches, and the stream resumes exactly mid-epoch (see `shard_stream.py`). Caption ids are a 62-bit
hash of the sample key: the same caption has the same id on every rank.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torchvision.io import ImageReadMode, decode_image

from stablerep_pl.augment.modes import AugmentationMode, AugmentationModeMixin
from stablerep_pl.augment.transforms import AugmentationConfig
from stablerep_pl.data.collate import CaptionBatchCollate
from stablerep_pl.data.loader import ResumableDataLoader
from stablerep_pl.data.sampling import check_views, choose_views
from stablerep_pl.data.shard_info import (
    check_local_urls,
    expand_urls,
    is_local,
    read_sample_files,
    read_shard_infos,
)
from stablerep_pl.data.shard_stream import ShardStream, SkipSample
from stablerep_pl.distributed.item_seeds import default_data_seed, seeded_draws

IMAGE_KEY = re.compile(r"^(\d+)\.(jpg|jpeg|png|webp)$")
REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # pipe:, http://, s3://, gs:// …


def caption_id(key: str) -> int:
    """Stable 62-bit integer id of a sample key."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 2


class SampleDecoder:
    """Raw tar sample + seed → `{"images": [m, 3, S, S], "caption_ids", "caption", "draw_seed"}`,
    plus the sample's `key` and shard `url` with `record_sources`.

    Raises `SkipSample` for a sample with too few or undecodable images. The choice of views and
    their augmentation draw from `seed` only (see `item_seeds.py`).
    """

    def __init__(
        self, views: int, transform: Callable, distinct_views: bool = True, record_sources: bool = False
    ) -> None:
        self.views, self.transform, self.distinct_views = views, transform, distinct_views
        self.record_sources = record_sources

    def __call__(self, sample: dict[str, Any], seed: int) -> dict[str, Any]:
        key = sample.get("__key__", "?")
        names = sorted((k for k in sample if IMAGE_KEY.match(k)), key=lambda k: int(k.split(".")[0]))
        if len(names) < (self.views if self.distinct_views else 1):
            raise SkipSample(f"{len(names)} images, need {self.views}")
        images = []
        with seeded_draws(seed):
            chosen = choose_views(len(names), self.views, self.distinct_views)
            for i in chosen:
                try:
                    image = decode_rgb(sample[names[i]])
                except (RuntimeError, OSError, ValueError) as err:
                    raise SkipSample(f"undecodable {names[i]}: {err}") from err
                images.append(self.transform(image))
        text = sample.get("txt", b"")
        item = {
            "images": torch.stack(images),
            "caption_ids": torch.tensor(caption_id(key), dtype=torch.long),
            "caption": text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text),
            "draw_seed": seed,
        }
        if self.record_sources:
            item.update(key=key, url=str(sample.get("__url__", "")))
        return item


def decode_rgb(data: bytes) -> torch.Tensor:
    """JPEG/PNG/WebP bytes → uint8 `[3, H, W]` with torchvision's decoders (about 2× PIL's speed)."""
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


class ShardDataModule(AugmentationModeMixin, L.LightningDataModule):
    """Batches `images [n, m, 3, S, S]`, `caption_ids [n]`, `caption` (n strings), `skipped` (samples
    skipped as unusable since the previous batch) from shards, plus CLIP `tokens [n, text_tokens]`
    for StableRep+ when `text_tokens` is set.

    `epoch_captions` is the number of captions per epoch across all ranks; when omitted it is read
    from `_info.json` beside local shards (counting only the shards `urls` names). `batch_size` counts
    captions per device. `seed` (default: the run's `seed_everything`) seeds every draw.
    `stall_timeout`: seconds without a batch before the run fails with the likely causes (None: wait
    forever); `max_consecutive_skips`: unusable samples/shards in a row before it fails.

    `augmentation_mode`: `batched` (default), `on_device` or `per_image`, see `augment/modes.py`.
    `record_sources` adds each sample's `key` and shard `url` (n strings each) to the batch, so
    `generated_pool` can read its stored images back (`CaptionGrid` turns it on).
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
        seed: int | None = None,
        strict: bool = False,
        pin_memory: bool = False,
        text_tokens: int | None = None,
        distinct_views: bool = True,
        augmentation_mode: AugmentationMode = "batched",
        stall_timeout: float | None = 600.0,
        max_consecutive_skips: int = 1000,
        record_sources: bool = False,
    ) -> None:
        super().__init__()
        self.record_sources = record_sources
        self.init_augmentation(augmentation, augmentation_mode)
        self.urls = expand_urls(urls)
        if batch_size < 1 or views < 1:
            raise ValueError(f"batch_size and views must be >= 1, got {batch_size} and {views}")
        self.views, self.batch_size = views, batch_size
        self.epoch_captions = epoch_captions
        self.resampled, self.shuffle_buffer = resampled, shuffle_buffer
        self.num_workers, self.seed, self.strict, self.pin_memory = num_workers, seed, strict, pin_memory
        self.stall_timeout, self.max_consecutive_skips = stall_timeout, max_consecutive_skips
        self.rank, self.world_size = 0, 1
        self.collate = CaptionBatchCollate(text_tokens, self.collate_augmentation())
        self.distinct_views = distinct_views
        self._infos: dict[str, Any] | None = None
        self._checked = False

    @property
    def images_per_batch(self) -> int:
        return self.batch_size * self.views

    @property
    def workers(self) -> int:
        return max(1, self.num_workers)

    def shard_infos(self) -> dict[str, Any] | None:
        """Local `_info.json` facts (read once), checked against the settings."""
        if not self._checked:
            check_local_urls(self.urls)
            self._infos = read_shard_infos(self.urls)
            if self._infos is not None and self._infos["images_per_caption"] is not None:
                check_views(self._infos["images_per_caption"], self.views, self.distinct_views)
            self._checked = True
        return self._infos

    def resolve_epoch_captions(self) -> int:
        if self.epoch_captions is not None:
            return self.epoch_captions
        infos = self.shard_infos()
        if infos is None:
            raise ValueError(
                "set data.init_args.epoch_captions: the shards are remote or have no _info.json "
                "to read the caption count from"
            )
        return sum(infos["counts"])

    def one_pass(self) -> bool:
        """One rank, no resampling and no fixed epoch length: an epoch is one pass over the shards."""
        return not self.resampled and self.world_size == 1 and self.epoch_captions is None

    def batches_per_worker(self) -> list[int]:
        """Each worker's batches per epoch (equal on every rank unless one pass on one rank)."""
        workers = self.workers
        if not self.resampled:
            per_worker_shards = [len(self.urls[r :: self.world_size][w::workers])
                                 for r in range(self.world_size) for w in range(workers)]  # fmt: skip
            if min(per_worker_shards) == 0:
                raise ValueError(
                    f"{len(self.urls)} shards cannot feed {self.world_size} ranks × {workers} workers "
                    "without resampling: use resampled: true, fewer workers or more shards"
                )
        if self.one_pass():
            counts = self.resolve_counts()
            mine = self.urls_per_worker()
            return [sum(counts[i] for i in indices) // self.batch_size for indices in mine]
        epoch_captions = self.resolve_epoch_captions()
        per_rank = epoch_captions // (self.world_size * self.batch_size) // workers * workers
        if per_rank < 1:
            raise ValueError(
                f"epoch of {epoch_captions} captions is too short for {self.world_size} ranks × "
                f"{workers} workers × batch {self.batch_size}"
            )
        return [per_rank // workers] * workers

    def resolve_counts(self) -> list[int]:
        infos = self.shard_infos()
        if infos is None:
            raise ValueError(
                "set data.init_args.epoch_captions: one pass over remote shards or shards without "
                "_info.json has no known length"
            )
        return infos["counts"]

    def urls_per_worker(self) -> list[list[int]]:
        indices = list(range(len(self.urls)))[self.rank :: self.world_size]
        return [indices[w :: self.workers] for w in range(self.workers)]

    def generated_pool(self, batch: dict[str, Any], row: int, count: int) -> list[torch.Tensor]:
        """The first `count` stored images of sample `row` of `batch`, un-augmented (uint8 `[3, H, W]`),
        read back from its shard; [] without `record_sources` or for a remote shard. Reads the shard's
        tar headers up to the sample (data is skipped by seeking): cheap for occasional callbacks."""
        if "key" not in batch or count < 1 or not is_local(batch["url"][row]):
            return []
        files = read_sample_files(batch["url"][row], batch["key"][row])
        names = sorted((k for k in files if IMAGE_KEY.match(k)), key=lambda k: int(k.split(".")[0]))
        return [decode_rgb(files[name]) for name in names[:count]]

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        self.shard_infos()  # fail before training on missing shards or too few images per caption
        self.batches_per_worker()

    def build_stream(self) -> ShardStream:
        return ShardStream(
            self.urls,
            decode=SampleDecoder(self.views, self.view_transform(), self.distinct_views, self.record_sources),
            collate=self.collate,
            batch_size=self.batch_size,
            batches_per_worker=self.batches_per_worker(),
            rank=self.rank,
            world_size=self.world_size,
            resampled=self.resampled,
            cycle=not self.resampled and not self.one_pass(),
            shuffle_buffer=self.shuffle_buffer,
            seed=default_data_seed() if self.seed is None else self.seed,
            strict=self.strict,
            max_consecutive_skips=self.max_consecutive_skips,
        )

    def _trainer_epoch(self) -> int | None:
        return None if self.trainer is None else int(self.trainer.current_epoch)

    def train_dataloader(self) -> ResumableDataLoader:
        first = self.urls[0] + (f" … ({len(self.urls)} shards)" if len(self.urls) > 1 else "")
        return ResumableDataLoader(
            self.build_stream(),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            epoch_source=self._trainer_epoch,
            stall_timeout=self.stall_timeout,
            stall_hint=f"Reading shards {first}.",
        )
