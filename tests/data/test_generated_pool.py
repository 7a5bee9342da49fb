"""The un-augmented images a data module shows for a batch row (`generated_pool`, used by CaptionGrid):
re-rendered on the fly, read back from shards only when batches name their source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stablerep_pl.augment.transforms import AugmentationConfig
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.data.on_the_fly import GeneratorDataModule
from stablerep_pl.data.shards import ShardDataModule
from stablerep_pl.generation import ImageRequest
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards


def rendered(generator: ProceduralGenerator, caption: str, j: int) -> np.ndarray:
    [image] = generator.render([ImageRequest(caption, caption_key(caption), j)])
    return np.asarray(image).transpose(2, 0, 1)


def shard_batch(folder: Path, **options: bool) -> tuple[ShardDataModule, dict]:
    dm = ShardDataModule(
        f"{folder}/shard-{{000000..000002}}.tar", views=2, batch_size=4, num_workers=0, resampled=False,
        shuffle_buffer=0, augmentation=AugmentationConfig(image_size=16), **options,
    )  # fmt: skip
    dm.setup("fit")
    return dm, next(iter(dm.train_dataloader()))


def test_shard_pool_is_read_back_only_when_sources_are_recorded(tmp_path: Path) -> None:
    generator = ProceduralGenerator(size=16, seed=2)
    captions = [Caption(caption_key(t), t) for t in procedural_captions(12, seed=5)]
    render_shards(generator, captions, tmp_path, images_per_caption=3, shard_size=4, image_format="png",
                  progress=False)  # fmt: skip
    dm, batch = shard_batch(tmp_path)  # by default batches carry no sources (nothing extra to collate)
    assert "key" not in batch and "url" not in batch and dm.generated_pool(batch, 0, 2) == []
    dm, batch = shard_batch(tmp_path, record_sources=True)
    assert batch["key"] == [caption_key(c) for c in batch["caption"]]
    for row in range(4):
        pool = dm.generated_pool(batch, row, 5)  # at most the k = 3 stored images
        assert len(pool) == 3
        for j, image in enumerate(pool):
            assert np.array_equal(image.numpy(), rendered(generator, batch["caption"][row], j))


def test_on_the_fly_pool_renders_the_first_images_of_the_caption() -> None:
    generator = ProceduralGenerator(size=16, seed=3)
    dm = GeneratorDataModule(generator, num_captions=16, images_per_caption=3, views=2, batch_size=4,
                             num_workers=0, augmentation=AugmentationConfig(image_size=16))  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    pool = dm.generated_pool(batch, 1, 2)
    assert [p.shape for p in pool] == [(3, 16, 16)] * 2
    assert all(
        np.array_equal(p.numpy(), rendered(generator, batch["caption"][1], j)) for j, p in enumerate(pool)
    )
