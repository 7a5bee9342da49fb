"""Reuse buffer: each caption group rendered once, served `reuse` times, exact per-rank epochs."""

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from fixtures.tiny_sd import build_tiny_sd_pipeline
from stablerep_pl.augment.transforms import AugmentationConfig, train_transform
from stablerep_pl.data.on_the_fly import GeneratorDataModule
from stablerep_pl.data.reuse_buffer import ReuseBufferDataset
from stablerep_pl.generation.base import ImageGenerator
from stablerep_pl.generation.diffusion import DiffusionGenerator
from stablerep_pl.generation.procedural import ProceduralGenerator


class Counting(ImageGenerator):
    def __init__(self) -> None:
        super().__init__()
        self.inner, self.rendered = ProceduralGenerator(size=16), Counter()

    def render(self, requests):
        self.rendered.update(r.caption for r in requests)
        return self.inner.render(requests)


CAPTIONS = [f"a red star number {i}" for i in range(11)]


def dataset(gen: ImageGenerator, reuse: int = 3, buffer_size: int = 4) -> ReuseBufferDataset:
    transform = train_transform(AugmentationConfig(image_size=16))
    return ReuseBufferDataset(CAPTIONS, gen, 4, 2, transform, reuse=reuse, buffer_size=buffer_size)


def test_each_group_rendered_once_and_served_reuse_times() -> None:
    gen = Counting()
    items = list(dataset(gen))
    assert len(items) == len(CAPTIONS) * 3
    assert Counter(int(x["caption_ids"]) for x in items) == {i: 3 for i in range(len(CAPTIONS))}
    assert gen.rendered == {c: 4 for c in CAPTIONS}  # k = 4 images, once per caption
    assert items[0]["images"].shape == (2, 3, 16, 16)


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_get_equal_disjoint_slices(workers: int) -> None:
    seen = []
    for rank in range(2):
        ds = dataset(ProceduralGenerator(size=16), reuse=2)
        ds.set_distributed(rank, 2)
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        ids = [int(x["caption_ids"]) for x in loader]
        assert len(ids) == len(ds) == (len(CAPTIONS) // 2) * 2
        seen.append(set(ids))
    assert not seen[0] & seen[1]


def test_data_module_with_tiny_diffusion_generator_and_reuse() -> None:
    gen = DiffusionGenerator.from_pipeline(
        build_tiny_sd_pipeline(), num_inference_steps=2, output_size=16, device="cpu"
    )
    dm = GeneratorDataModule(
        gen, captions=CAPTIONS[:6], images_per_caption=3, views=2, batch_size=4, num_workers=0, reuse=2,
        buffer_size=4, augmentation=AugmentationConfig(image_size=16),
    )  # fmt: skip
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # one whole batch of 4 of the 6 captions, × 2 uses
    assert batches[0]["images"].shape == (4, 2, 3, 16, 16) and batches[0]["images"].dtype == torch.float32


def test_no_caption_twice_in_a_batch_and_every_caption_reuse_times() -> None:
    ds = ReuseBufferDataset(
        [f"a red star number {i}" for i in range(40)], ProceduralGenerator(size=16), 4, 2,
        train_transform(AugmentationConfig(image_size=16)), reuse=3, buffer_size=10, batch_size=4,
    )  # fmt: skip
    ids = [int(x["caption_ids"]) for x in ds]
    assert len(ids) == len(ds) == 40 * 3
    assert Counter(ids) == {i: 3 for i in range(40)}
    batches = [ids[i : i + 4] for i in range(0, len(ids), 4)]
    assert all(len(set(b)) == 4 for b in batches)  # the old buffer repeated a caption in ~20 % of slots


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_buffer_continues_exactly(workers: int) -> None:
    def build() -> ReuseBufferDataset:
        return ReuseBufferDataset(
            CAPTIONS * 1, ProceduralGenerator(size=16), 4, 2, train_transform(AugmentationConfig(image_size=16)),
            reuse=3, buffer_size=4, batch_size=2, seed=5,
        )  # fmt: skip

    from stablerep_pl.data.loader import ResumableDataLoader

    reference = list(ResumableDataLoader(build(), batch_size=2, drop_last=True, num_workers=workers))
    source = ResumableDataLoader(build(), batch_size=2, drop_last=True, num_workers=workers)
    it = iter(source)
    head = [next(it) for _ in range(5)]
    restored = ResumableDataLoader(build(), batch_size=2, drop_last=True, num_workers=workers)
    restored.load_state_dict(source.state_dict())
    resumed = head + list(restored)
    assert len(resumed) == len(reference) == len(source)
    for a, b in zip(resumed, reference):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["caption_ids"], b["caption_ids"])
