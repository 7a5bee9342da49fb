"""The three augmentation modes give both training data modules the same batch contract."""

import pytest
import torch

from stablerep_pl.augment.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentationConfig
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.data.on_the_fly import GeneratorDataModule
from stablerep_pl.data.shards import ShardDataModule
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

MODES = ["batched", "per_image", "on_device"]
AUGMENTATION = AugmentationConfig(image_size=16)


@pytest.fixture(scope="module")
def shard_urls(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("shards")
    captions = [Caption(caption_key(t), t) for t in procedural_captions(16, seed=2)]
    render_shards(ProceduralGenerator(size=24), captions, folder, 4, 8, progress=False)
    return str(folder / "shard-{000000..000001}.tar")


def data_module(kind: str, shard_urls: str, mode: str):
    common = dict(views=2, batch_size=4, augmentation=AUGMENTATION, num_workers=0, augmentation_mode=mode)
    if kind == "shards":
        return ShardDataModule(shard_urls, resampled=False, **common)
    dm = GeneratorDataModule(ProceduralGenerator(size=24), num_captions=16, images_per_caption=4, **common)
    dm.setup("fit")
    return dm


def assert_normalised_views(images: torch.Tensor) -> None:
    assert images.shape == (4, 2, 3, 16, 16) and images.dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert (images >= -mean / std - 1e-5).all() and (images <= (1 - mean) / std + 1e-5).all()
    assert images.std() > 0.1


@pytest.mark.parametrize("kind", ["shards", "generator"])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_yields_normalised_views(shard_urls: str, kind: str, mode: str) -> None:
    dm = data_module(kind, shard_urls, mode)
    batch = next(iter(dm.train_dataloader()))
    if mode == "on_device":  # the loader ships uint8 crops; the hook augments after transfer
        assert batch["images"].dtype == torch.uint8
        batch = dm.on_after_batch_transfer(batch, 0)
    assert_normalised_views(batch["images"])


@pytest.mark.parametrize("mode", ["batched", "per_image"])
def test_the_after_transfer_hook_leaves_augmented_batches_alone(shard_urls: str, mode: str) -> None:
    dm = data_module("shards", shard_urls, mode)
    batch = next(iter(dm.train_dataloader()))
    images = batch["images"]
    assert dm.on_after_batch_transfer(batch, 0)["images"] is images


def test_unknown_mode_is_rejected(shard_urls: str) -> None:
    with pytest.raises(ValueError, match="augmentation_mode"):
        data_module("shards", shard_urls, "gpu")
    with pytest.raises(ValueError, match="augmentation_mode"):
        data_module("generator", shard_urls, "gpu")


def test_generator_validation_batches_follow_the_mode() -> None:
    dm = GeneratorDataModule(ProceduralGenerator(size=24), num_captions=16, images_per_caption=4, views=2,
                             batch_size=4, augmentation=AUGMENTATION, num_workers=0, val_captions=4,
                             augmentation_mode="on_device")  # fmt: skip
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].dtype == torch.uint8
    assert_normalised_views(dm.on_after_batch_transfer(batch, 0)["images"])
