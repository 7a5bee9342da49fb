"""ShardDataModule: batch contract, exact epochs, disjoint rank/worker splits, bad data."""

import io
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
from stablerep_pl.data.shards import ShardDataModule, caption_id
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

NUM_CAPTIONS = 64


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    caps = [Caption(caption_key(t), t) for t in procedural_captions(NUM_CAPTIONS, seed=2)]
    render_shards(
        ProceduralGenerator(size=16), caps, folder, images_per_caption=4, shard_size=8, progress=False
    )
    return folder


def module(urls, **kwargs) -> ShardDataModule:
    defaults = dict(views=2, batch_size=4, augmentation=AugmentationConfig(image_size=16), num_workers=0)
    return ShardDataModule(urls, **{**defaults, **kwargs})


def all_ids(dm: ShardDataModule) -> list[int]:
    return [i for batch in dm.train_dataloader() for i in batch["caption_ids"].tolist()]


def test_batch_contract_matches_generator_module(shard_dir: Path) -> None:
    dm = module(str(shard_dir / "shard-{000000..000007}.tar"), resampled=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 2, 3, 16, 16) and batch["images"].dtype == torch.float32
    assert batch["caption_ids"].dtype == torch.long and len(batch["caption"]) == 4
    for cid, text in zip(batch["caption_ids"].tolist(), batch["caption"]):
        assert cid == caption_id(caption_key(text))


@pytest.mark.parametrize("workers", [0, 2])
def test_one_pass_covers_every_caption_once(shard_dir: Path, workers: int) -> None:
    ids = all_ids(module(sorted(map(str, shard_dir.glob("*.tar"))), resampled=False, num_workers=workers))
    expected = {caption_id(caption_key(t)) for t in procedural_captions(NUM_CAPTIONS, seed=2)}
    assert len(ids) == NUM_CAPTIONS and set(ids) == expected


def test_ranks_and_workers_split_disjointly(shard_dir: Path) -> None:
    urls = sorted(map(str, shard_dir.glob("*.tar")))
    seen = []
    for rank in range(2):
        dm = module(urls, resampled=False, num_workers=2, epoch_captions=NUM_CAPTIONS, shuffle_buffer=0)
        dm.rank, dm.world_size = rank, 2
        ids = all_ids(dm)
        assert len(ids) == NUM_CAPTIONS // 2 == len(dm.train_dataloader()) * 4
        seen.append(set(ids))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == NUM_CAPTIONS


def test_resampled_epochs_are_exact_and_differ_by_rank(shard_dir: Path) -> None:
    streams = []
    for rank in range(2):
        dm = module(str(shard_dir / "shard-{000000..000007}.tar"), num_workers=2)  # epoch from _info.json
        dm.rank, dm.world_size = rank, 2
        loader = dm.train_dataloader()
        batches = [b["caption_ids"] for b in loader]
        assert len(batches) == len(loader) == NUM_CAPTIONS // (2 * 4)
        streams.append(torch.cat(batches))
    assert not torch.equal(streams[0], streams[1])


def corrupt_copy(src: Path, dst: Path, bad_key: str) -> None:
    with tarfile.open(src) as tar_in, tarfile.open(dst, "w") as tar_out:
        for member in tar_in.getmembers():
            data = tar_in.extractfile(member).read()
            if member.name.startswith(bad_key) and member.name.endswith(".jpg"):
                data = b"\xff\xd8 not a jpeg"
                member.size = len(data)
            tar_out.addfile(member, io.BytesIO(data))


def test_undecodable_images_are_skipped_and_counted_or_raise(shard_dir: Path, tmp_path: Path) -> None:
    src = shard_dir / "shard-000000.tar"
    with tarfile.open(src) as tar:
        bad_key = tar.getmembers()[0].name.split(".")[0]
    corrupt_copy(src, tmp_path / "bad.tar", bad_key)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = all_ids(module(str(tmp_path / "bad.tar"), resampled=False, batch_size=1))
    assert len(ids) == 7 and caption_id(bad_key) not in ids
    assert any("undecodable" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="strict"):
        all_ids(module(str(tmp_path / "bad.tar"), resampled=False, batch_size=1, strict=True))


def test_truncated_tar_yields_what_it_can(shard_dir: Path, tmp_path: Path) -> None:
    src = shard_dir / "shard-000001.tar"
    with tarfile.open(src) as tar:
        middle = tar.getmembers()[len(tar.getmembers()) // 2]  # cut inside this member's data
    (tmp_path / "cut.tar").write_bytes(src.read_bytes()[: middle.offset_data + middle.size // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = all_ids(module(str(tmp_path / "cut.tar"), resampled=False, batch_size=1))
    assert 1 <= len(ids) < 8
    with pytest.raises(DataError, match=r"unreadable data in .*cut\.tar: .*\(strict mode\)") as error:
        all_ids(module(str(tmp_path / "cut.tar"), resampled=False, batch_size=1, strict=True))
    assert isinstance(error.value, ValueError)  # DataError is a ValueError: callers may catch either


def test_too_few_shards_for_ranks_is_a_clear_error(shard_dir: Path) -> None:
    dm = module(str(shard_dir / "shard-000000.tar"), resampled=False, epoch_captions=8)
    dm.rank, dm.world_size = 1, 2
    with pytest.raises(ValueError, match="cannot feed"):
        dm.train_dataloader()


def test_epoch_length_counts_only_the_named_shards(shard_dir: Path) -> None:
    half = module(str(shard_dir / "shard-{000000..000003}.tar"), num_workers=0)  # 4 of 8 shards
    every = module(str(shard_dir / "shard-{000000..000007}.tar"), num_workers=0)
    half.setup(), every.setup()
    assert (
        half.resolve_epoch_captions() == NUM_CAPTIONS // 2 and every.resolve_epoch_captions() == NUM_CAPTIONS
    )
    assert len(half.train_dataloader()) == NUM_CAPTIONS // 2 // 4
