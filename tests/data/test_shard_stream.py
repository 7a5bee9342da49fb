"""ShardStream: seeded order, exact restore from any batch (shuffle buffer included), counted skips."""

from __future__ import annotations

import io
import itertools
import tarfile
import warnings
from pathlib import Path

import pytest
import torch

from stablerep_pl.augment.transforms import AugmentationConfig
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.data.shard_stream import DataError
from stablerep_pl.data.shards import ShardDataModule
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

NUM_CAPTIONS, SHARD_SIZE = 60, 6


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stream_shards")
    caps = [Caption(caption_key(t), t) for t in procedural_captions(NUM_CAPTIONS, seed=5)]
    render_shards(ProceduralGenerator(size=16), caps, folder, images_per_caption=3, shard_size=SHARD_SIZE,
                  progress=False)  # fmt: skip
    return folder


def urls(folder: Path) -> list[str]:
    return sorted(map(str, folder.glob("shard-*.tar")))


def stream(folder_urls: list[str], **kwargs):
    defaults = dict(views=2, batch_size=4, augmentation=AugmentationConfig(image_size=16), num_workers=0,
                    shuffle_buffer=10, seed=3)  # fmt: skip
    dm = ShardDataModule(folder_urls, **{**defaults, **kwargs})
    dm.setup()
    return dm.build_stream()


def batches_of(ds, epoch: int = 0) -> list[dict]:
    ds.set_epoch(epoch)
    return list(ds)


def same(a: dict, b: dict) -> bool:
    return torch.equal(a["images"], b["images"]) and torch.equal(a["caption_ids"], b["caption_ids"])


@pytest.mark.parametrize(
    "settings",
    [
        dict(resampled=True),
        dict(resampled=False),  # one pass
        dict(resampled=False, epoch_captions=48),  # cycle with an epoch cut
        dict(resampled=True, shuffle_buffer=0),
        dict(resampled=False, augmentation_mode="on_device"),
    ],
)
def test_restored_stream_continues_exactly_from_every_batch(shard_dir: Path, settings: dict) -> None:
    reference = batches_of(stream(urls(shard_dir), **settings), epoch=1)
    assert len(reference) >= 6
    for cut in (1, len(reference) // 2, len(reference) - 1):
        ds = stream(urls(shard_dir), **settings)
        ds.set_epoch(1)
        it = iter(ds)
        for _ in range(cut):
            next(it)
        state = ds.state_dict()
        fresh = stream(urls(shard_dir), **settings)
        fresh.set_epoch(0)  # the state names the epoch
        fresh.load_state_dict(state)
        rest = list(fresh)
        assert len(rest) == len(reference) - cut, cut
        assert all(same(a, b) for a, b in zip(rest, reference[cut:])), f"differs after batch {cut}"


def test_restore_rereads_only_the_shards_still_buffered(shard_dir: Path, monkeypatch) -> None:
    ds = stream(urls(shard_dir), resampled=False, shuffle_buffer=8)
    it = iter(ds)
    for _ in range(12):  # 48 samples emitted, 9+ shards opened
        next(it)
    state = ds.state_dict()
    assert len(state["opened"]) >= 9
    fresh = stream(urls(shard_dir), resampled=False, shuffle_buffer=8)
    opened = []
    original = fresh._read_shard
    monkeypatch.setattr(fresh, "_read_shard", lambda i, c: opened.append(i) or original(i, c))
    fresh.load_state_dict(state)
    next(iter(fresh))
    # the shards still holding buffered samples, and the one being read: not the whole epoch again
    assert len(opened) < len(state["opened"]) - 2


def test_same_seed_same_batches_other_seed_or_epoch_others(shard_dir: Path) -> None:
    a = batches_of(stream(urls(shard_dir), resampled=True))
    b = batches_of(stream(urls(shard_dir), resampled=True))
    assert len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    c = batches_of(stream(urls(shard_dir), resampled=True, seed=4))
    d = batches_of(stream(urls(shard_dir), resampled=True), epoch=1)
    assert not all(torch.equal(x["caption_ids"], y["caption_ids"]) for x, y in zip(a, c))
    assert not all(torch.equal(x["caption_ids"], y["caption_ids"]) for x, y in zip(a, d))


def test_one_pass_shards_order_changes_per_epoch_and_covers_all(shard_dir: Path) -> None:
    ds = stream(urls(shard_dir), resampled=False, batch_size=5)
    first, second = batches_of(ds, 0), batches_of(ds, 1)
    ids = [torch.cat([b["caption_ids"] for b in run]).tolist() for run in (first, second)]
    assert len(ids[0]) == NUM_CAPTIONS == len(set(ids[0])) and set(ids[0]) == set(ids[1])
    assert ids[0] != ids[1]


def rewrite(src: Path, dst: Path, corrupt: set[str]) -> None:
    """Copy a shard with the images of the samples in `corrupt` replaced by garbage."""
    with tarfile.open(src) as tar_in, tarfile.open(dst, "w") as tar_out:
        for member in tar_in.getmembers():
            data = tar_in.extractfile(member).read()
            if member.name.split(".")[0] in corrupt and member.name.endswith(".jpg"):
                data = b"not a jpeg"
                member.size = len(data)
            tar_out.addfile(member, io.BytesIO(data))


def test_skips_are_counted_in_batches_and_restore_exactly(shard_dir: Path, tmp_path: Path) -> None:
    for i, src in enumerate(urls(shard_dir)):
        with tarfile.open(src) as tar:
            keys = sorted({m.name.split(".")[0] for m in tar.getmembers()})
        rewrite(Path(src), tmp_path / Path(src).name, set(keys[:1]) if i % 2 == 0 else set())
    bad = urls(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = batches_of(stream(bad, resampled=False, batch_size=3))
        assert sum(int(b["skipped"]) for b in reference) == 5  # one per even shard
        assert sum(len(b["caption_ids"]) for b in reference) == (NUM_CAPTIONS - 5) // 3 * 3
        ds = stream(bad, resampled=False, batch_size=3)
        it = iter(ds)
        for _ in range(7):
            next(it)
        fresh = stream(bad, resampled=False, batch_size=3)
        fresh.load_state_dict(ds.state_dict())
        rest = list(fresh)
    assert all(same(a, b) and int(a["skipped"]) == int(b["skipped"]) for a, b in zip(rest, reference[7:]))


def test_a_source_of_only_unusable_samples_fails_instead_of_spinning(shard_dir: Path) -> None:
    ds = stream(urls(shard_dir), resampled=True, views=2, max_consecutive_skips=20)
    ds.decode.views = 5  # more views than the 3 images per caption (the module's check bypassed)
    with warnings.catch_warnings(), pytest.raises(DataError, match="20 consecutive"):
        warnings.simplefilter("ignore")
        next(iter(ds))


def test_streams_of_different_workers_are_disjoint_without_resampling(shard_dir: Path) -> None:
    ds = stream(urls(shard_dir), resampled=False, num_workers=3)
    shards = [set(ds.worker_shards(w, 3)) for w in range(3)]
    assert all(not (a & b) for a, b in itertools.combinations(shards, 2))
    assert set().union(*shards) == set(range(len(urls(shard_dir))))
