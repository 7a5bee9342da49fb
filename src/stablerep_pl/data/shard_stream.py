"""Batches from webdataset shards that a requeued run resumes exactly, without re-reading the epoch.

Per worker and epoch the stream is: a deterministic sequence of shards (seeded resampling, or the
worker's own shards in a seeded order, once or cycled) → webdataset's tar reader → webdataset's
shuffle buffer with a seeded RNG → decode + augment each sample with its own seed (its position in
the stream) → batches. Everything random is a function of (seed, rank, worker, epoch), so the same
seed gives the same batches, and the state after a batch is small: the shards opened this epoch
with how many samples each gave, how many samples left the shuffle buffer, and the batch count.

Why not webdataset's pipeline alone: exact resume needs the shuffle buffer's content, which is
hundreds of decoded-size samples. Instead the shuffle runs over lightweight sample *identities*
(shard position, index in shard) while the samples themselves wait in a side table. On resume the
identities are replayed from the recorded counts (no I/O; the shuffle's reads depend only on the
counts), the handful of shards that still have samples in the buffer are re-read for those
samples only, and reading continues where it stopped. webdataset has no such state (its
`ResampledShards` also restarts its epoch counter in every new worker, which replayed epoch 0's
draws after each requeue).
"""

from __future__ import annotations

import functools
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.filters import _shuffle

from stablerep_pl.distributed.item_seeds import derive_seed

Identity = tuple[int, int]  # (position of the shard in this epoch's sequence, sample index in it)


class DataError(ValueError):
    """The data source yields nothing usable (every sample skipped, every shard unreadable)."""


class SkipSample(Exception):
    """A sample that cannot be used; the stream counts it and moves on (or raises in strict mode)."""


def _past(entry: list[int], prefix: int) -> bool:
    """Whether reading of a shard (`entry` = [url index, samples read]) is past a replayed prefix."""
    return entry[1] >= prefix


class ShardStream(IterableDataset):
    """Collated batches for one rank; each worker reads its own part (see the module docstring).

    Args:
        urls: every shard URL (after brace expansion).
        decode: `decode(sample, seed) -> item`, raising `SkipSample` for unusable samples.
        collate: list of items → batch.
        batch_size: items per batch.
        rank, world_size: this rank among the data-parallel ranks.
        num_workers: the DataLoader's workers (0: read in the training process).
        resampled: draw shards with replacement (any shard count feeds any number of workers);
            else each worker reads its own disjoint shards in a seeded order.
        cycle: without resampling, cycle over the worker's shards until the epoch's batch quota
            is met (several ranks: equal batch counts everywhere); else one pass per epoch.
        batches_per_worker: each worker's batches per epoch; for one pass, an upper bound.
        shuffle_buffer: samples in the shuffle buffer (0 or 1: no shuffling).
        seed: base seed of every draw.
        strict: raise on the first unusable sample instead of skipping it.
        max_consecutive_skips: fail with `DataError` after this many unusable samples or shards
            in a row (instead of spinning forever on a broken source).
    """

    def __init__(
        self,
        urls: list[str],
        decode: Callable[[dict[str, Any], int], dict[str, Any]],
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        batch_size: int,
        batches_per_worker: list[int],
        rank: int = 0,
        world_size: int = 1,
        resampled: bool = True,
        cycle: bool = False,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        strict: bool = False,
        max_consecutive_skips: int = 1000,
    ) -> None:
        super().__init__()
        self.urls, self.decode, self.collate = urls, decode, collate
        self.batch_size, self.batches_per_worker = batch_size, list(batches_per_worker)
        self.rank, self.world_size = rank, world_size
        self.resampled, self.cycle = resampled, cycle
        self.shuffle_buffer, self.seed, self.strict = shuffle_buffer, seed, strict
        self.max_consecutive_skips = max_consecutive_skips
        self.epoch = 0
        self._restore: dict[str, Any] | None = None
        self._state: dict[str, Any] = {}
        self._skipped_total = 0

    # -- sizes and epochs --------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch of this rank (the loader yields batches: `batch_size=None`)."""
        return sum(self.batches_per_worker)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def worker_shards(self, worker: int, workers: int) -> list[int]:
        """URL indices this worker reads without resampling (this rank's, then this worker's share)."""
        return list(range(len(self.urls)))[self.rank :: self.world_size][worker::workers]

    # -- state (called by torchdata's StatefulDataLoader, in the worker) ---------------------
    def state_dict(self) -> dict[str, Any]:
        return {**self._state, "opened": [list(o) for o in self._state.get("opened", [])]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore = dict(state) if state else None

    # -- the stream --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if workers != len(self.batches_per_worker):
            raise RuntimeError(
                f"ShardStream was sized for {len(self.batches_per_worker)} workers but runs in {workers}"
            )
        restore, self._restore = self._restore, None
        epoch = int(restore["epoch"]) if restore else self.epoch
        return self._batches(epoch, worker, workers, restore)

    def _coordinates(self, epoch: int, worker: int) -> tuple[int, ...]:
        return (self.seed, self.rank, self.world_size, worker, epoch)

    def _shard_sequence(self, epoch: int, worker: int, workers: int) -> Iterator[int]:
        """URL indices in reading order: seeded draws, or this worker's shards per seeded pass."""
        coords = self._coordinates(epoch, worker)
        if self.resampled:
            draws = random.Random(derive_seed("resample", *coords))
            while True:
                yield draws.randrange(len(self.urls))
        mine = self.worker_shards(worker, workers)
        if not mine:
            return
        passes = 0
        while True:
            order = list(mine)
            random.Random(derive_seed("order", *coords, passes)).shuffle(order)
            yield from order
            passes += 1
            if not self.cycle:
                return

    def _read_shard(self, url_index: int, counting: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """The samples of one shard (webdataset's tar reader); read errors are counted skips."""

        def handler(exn: Exception) -> bool:
            if counting():
                self._shard_errors += 1
                self._skip(f"unreadable data in {self.urls[url_index]}: {exn}")
            return True

        return wds.tarfile_samples([{"url": self.urls[url_index]}], handler=handler)

    def _skip(self, reason: str) -> None:
        if self.strict:
            raise DataError(f"{reason} (strict mode)")
        self._skipped_total += 1
        self._consecutive_skips += 1
        if self._skipped_total <= 10 or self._skipped_total % 1000 == 0:
            warnings.warn(f"skipping: {reason} ({self._skipped_total} skipped so far)", stacklevel=2)
        if self._consecutive_skips >= self.max_consecutive_skips:
            raise DataError(
                f"{self._consecutive_skips} consecutive samples or shards were unusable; last: {reason}. "
                "Check the shard URLs and that `views` <= images per caption"
            )

    def _identities(
        self,
        epoch: int,
        worker: int,
        workers: int,
        recorded: list[list[int]],
        opened: list[list[int]],
        payloads: dict[Identity, dict[str, Any]],
    ) -> Iterator[Identity]:
        """Sample identities in reading order; live samples wait in `payloads`.

        Shards fully accounted for by a restore (`recorded[:-1]`) are replayed from their counts
        without reading; the last recorded shard is re-read (its samples may still sit in the
        shuffle buffer) and reading goes on live from there. `opened` records what was read.
        """
        for position, (url_index, count) in enumerate(recorded[:-1]):
            opened.append([url_index, count])
            for j in range(count):
                yield position, j
        replayed_prefix = recorded[-1][1] if recorded else 0
        for position, url_index in enumerate(self._shard_sequence(epoch, worker, workers)):
            if position < len(recorded) - 1:
                continue  # replayed above
            resuming = position == len(recorded) - 1
            if resuming and recorded[-1][0] != url_index:
                raise RuntimeError("the restored shard sequence differs from the recorded one")
            prefix = replayed_prefix if resuming else 0
            opened.append([url_index, 0])
            self._shard_errors = 0
            # read errors inside the replayed prefix were counted before the requeue
            counting = functools.partial(_past, opened[-1], prefix)
            for j, sample in enumerate(self._read_shard(url_index, counting)):
                opened[-1][1] = j + 1
                payloads[(position, j)] = sample
                yield position, j
            if opened[-1][1] == 0 and self._shard_errors == 0 and prefix == 0:
                self._skip(f"shard {self.urls[url_index]} holds no samples")

    def _batches(
        self, epoch: int, worker: int, workers: int, restore: dict[str, Any] | None
    ) -> Iterator[dict[str, Any]]:
        quota = self.batches_per_worker[worker]
        recorded = [list(o) for o in restore["opened"]] if restore else []
        emitted = int(restore["emitted"]) if restore else 0
        batches = int(restore["batches"]) if restore else 0
        self._skipped_total = int(restore["skipped"]) if restore else self._skipped_total
        self._consecutive_skips = 0
        opened: list[list[int]] = []
        payloads: dict[Identity, dict[str, Any]] = {}
        stream = self._identities(epoch, worker, workers, recorded, opened, payloads)
        if self.shuffle_buffer > 1:
            rng = random.Random(derive_seed("shuffle", *self._coordinates(epoch, worker)))
            stream = _shuffle(
                stream, bufsize=self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), rng=rng
            )
        if emitted:
            self._fast_forward(stream, emitted, recorded, payloads)
        pending: list[dict[str, Any]] = []
        skipped_at_last_batch = self._skipped_total
        while batches < quota:
            identity = next(stream, None)
            if identity is None:  # one pass ended; the last partial batch is dropped
                if batches == 0:
                    raise DataError(
                        f"worker {worker} of rank {self.rank} found no usable samples in its shards"
                    )
                return
            sample = payloads.pop(identity)
            seed = derive_seed("item", *self._coordinates(epoch, worker), emitted)
            emitted += 1
            try:
                item = self.decode(sample, seed)
            except SkipSample as reason:
                self._skip(f"sample {sample.get('__key__', '?')} in {sample.get('__url__', '?')}: {reason}")
                continue
            self._consecutive_skips = 0
            pending.append(item)
            if len(pending) < self.batch_size:
                continue
            batch = self.collate(pending)
            pending = []
            batches += 1
            batch["skipped"] = torch.tensor(self._skipped_total - skipped_at_last_batch)
            skipped_at_last_batch = self._skipped_total
            self._state = {
                "epoch": epoch, "opened": opened, "emitted": emitted, "batches": batches,
                "skipped": self._skipped_total,
            }  # fmt: skip
            yield batch

    def _fast_forward(
        self,
        stream: Iterator[Identity],
        emitted: int,
        recorded: list[list[int]],
        payloads: dict[Identity, dict[str, Any]],
    ) -> None:
        """Drop the `emitted` identities already trained on; re-read the samples still buffered.

        Identities of replayed shards carry no payload; those still in the buffer afterwards are
        read back from their shards (a few shards: the buffer spans the most recent reads).
        """
        in_buffer: set[Identity] = set()
        source_log: list[Identity] = []
        for _ in range(emitted):
            identity = next(stream)
            payloads.pop(identity, None)
            source_log.append(identity)
        replayed = {(p, j) for p, (_, c) in enumerate(recorded[:-1]) for j in range(c)}
        emitted_set = set(source_log)
        in_buffer = {i for i in replayed if i not in emitted_set}
        by_shard: dict[int, set[int]] = {}
        for position, j in in_buffer:
            by_shard.setdefault(position, set()).add(j)
        for position, wanted in sorted(by_shard.items()):
            last = max(wanted)
            for j, sample in enumerate(self._read_shard(recorded[position][0], lambda: False)):
                if j in wanted:
                    payloads[(position, j)] = sample
                if j >= last:
                    break
