import pytest
import torch

from stablerep_pl.augment.transforms import AugmentationConfig, train_transform
from stablerep_pl.data.on_the_fly import CaptionGroupDataset, GeneratorDataModule, unique_captions
from stablerep_pl.generation.base import ImageGenerator
from stablerep_pl.generation.procedural import ProceduralGenerator


class Recording(ImageGenerator):
    """Wraps a generator and records every request, to check which images were asked for."""

    def __init__(self, inner: ImageGenerator) -> None:
        super().__init__(seed=inner.seed)
        self.inner, self.requests = inner, []

    def render(self, requests):
        self.requests.extend(requests)
        return self.inner.render(requests)


def module(**kwargs) -> GeneratorDataModule:
    defaults = dict(num_captions=40, views=3, images_per_caption=5, batch_size=4, num_workers=0)
    defaults.update(kwargs)
    return GeneratorDataModule(
        ProceduralGenerator(size=32, seed=0), augmentation=AugmentationConfig(image_size=24), **defaults
    )


def test_batch_contract() -> None:
    dm = module()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 3, 24, 24) and batch["images"].dtype == torch.float32
    assert batch["caption_ids"].shape == (4,) and batch["caption_ids"].dtype == torch.long
    assert len(batch["caption"]) == 4
    for cid, text in zip(batch["caption_ids"], batch["caption"]):
        assert dm.train_dataset.captions[int(cid)] == text
    assert dm.images_per_batch == 12


def test_views_are_distinct_images_of_the_pool() -> None:
    gen = Recording(ProceduralGenerator(size=32, seed=0))
    ds = CaptionGroupDataset(
        ["a red star", "a blue ring"], gen, 5, 4, train_transform(AugmentationConfig(24))
    )
    for _ in range(10):
        ds[1]
    for start in range(0, 40, 4):
        group = gen.requests[start : start + 4]
        assert len({r.index for r in group}) == 4 and all(0 <= r.index < 5 for r in group)
        assert {r.caption for r in group} == {"a blue ring"}


def test_batches_are_reproducible_under_a_seed() -> None:
    def first_batch():
        torch.manual_seed(11)
        dm = module()
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))

    a, b = first_batch(), first_batch()
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["caption_ids"], b["caption_ids"])


def test_caption_ids_are_unique_per_epoch_across_ranks() -> None:
    """Each rank's loader yields its share of one seeded permutation per epoch (DistributedSampler's
    rule, written out here): disjoint across ranks, in that order, and reshuffled every epoch."""
    num_captions, world, seed = 30, 2, 5

    def expected(rank: int, epoch: int) -> list[int]:
        permutation = torch.randperm(num_captions, generator=torch.Generator().manual_seed(seed + epoch))
        share = permutation[: num_captions // world * world][rank::world].tolist()  # drop_last
        return share[: len(share) // 4 * 4]  # whole batches of 4

    seen = {}
    for rank in range(world):
        dm = module(num_captions=num_captions, views=2, seed=seed)
        dm.rank, dm.world_size = rank, world
        dm.setup("fit")
        for epoch in (0, 1):
            batches = loader_batches(dm, epoch)
            seen[rank, epoch] = [i for b in batches for i in b["caption_ids"].tolist()]
            assert all(dm.train_dataset.captions[int(i)] == c for b in batches
                       for i, c in zip(b["caption_ids"], b["caption"]))  # fmt: skip
    for epoch in (0, 1):
        assert [seen[r, epoch] for r in range(world)] == [expected(r, epoch) for r in range(world)]
        assert not set(seen[0, epoch]) & set(seen[1, epoch])
    assert seen[0, 0] != seen[0, 1]


def test_unique_captions() -> None:
    assert unique_captions(["a", " a ", "", "b", "a"]) == ["a", "b"]


def test_simclr_mode_augments_one_image_per_caption() -> None:
    gen = Recording(ProceduralGenerator(size=32, seed=0))
    transform = train_transform(AugmentationConfig(24))
    ds = CaptionGroupDataset(["a red star"], gen, 5, 2, transform, distinct_views=False)
    for _ in range(5):
        item = ds[0]
        assert not torch.equal(item["images"][0], item["images"][1])  # two augmentations ...
    for start in range(0, 10, 2):
        assert gen.requests[start].index == gen.requests[start + 1].index  # ... of the same image


def loader_batches(dm: GeneratorDataModule, epoch: int = 0) -> list[dict]:
    loader = dm.train_dataloader()
    loader.epoch_source = lambda: epoch
    return list(loader)


@pytest.mark.parametrize("reuse", [1, 2])
@pytest.mark.parametrize("world", [1, 2])
def test_same_seed_same_batches_with_and_without_workers(reuse: int, world: int) -> None:
    """Every draw is seeded per item: the worker count cannot change a batch, a seed always repeats it."""
    runs = {}
    for workers in (0, 2):
        dm = module(num_workers=workers, seed=3, reuse=reuse, buffer_size=8, num_captions=48)
        dm.rank, dm.world_size = world - 1, world  # the last rank of `world`
        dm.setup("fit")
        runs[workers] = loader_batches(dm)
    if reuse == 1:  # per-item keys: identical whatever the workers
        assert [b["caption_ids"].tolist() for b in runs[0]] == [b["caption_ids"].tolist() for b in runs[2]]
        assert all(torch.equal(a["images"], b["images"]) for a, b in zip(runs[0], runs[2]))
    again = module(num_workers=2, seed=3, reuse=reuse, buffer_size=8, num_captions=48)
    again.rank, again.world_size = world - 1, world
    again.setup("fit")
    repeat = loader_batches(again)
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(runs[2], repeat))
    other = module(num_workers=0, seed=4, reuse=reuse, buffer_size=8, num_captions=48)
    other.rank, other.world_size = world - 1, world
    other.setup("fit")
    assert not torch.equal(loader_batches(other)[0]["images"], runs[0][0]["images"])


def test_one_caption_normalisation_on_every_path() -> None:
    from stablerep_pl.captions.sources import TextCaptions

    spaced = "a  red   star "
    assert unique_captions([spaced]) == ["a red star"]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.txt"
        path.write_text(spaced + "\n")
        (record,) = TextCaptions(str(path)).load()
    from stablerep_pl.captions.keys import caption_key

    assert record.text == "a red star" and record.key == caption_key(spaced) == caption_key("a red star")


def test_too_few_captions_for_the_ranks_is_a_clear_error() -> None:
    dm = module(num_captions=6, batch_size=4)
    dm.rank, dm.world_size = 0, 2
    with pytest.raises(ValueError, match="cannot fill one batch"):
        dm.setup("fit")
