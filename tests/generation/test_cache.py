"""`CachedGenerator`: each image rendered once, and nothing the model sees changes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from stablerep_pl.augment.transforms import AugmentationConfig
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.data.on_the_fly import GeneratorDataModule
from stablerep_pl.generation.base import ImageRequest
from stablerep_pl.generation.cache import CachedGenerator
from stablerep_pl.generation.procedural import ProceduralGenerator

CAPTIONS = procedural_captions(5, seed=4)


def requests(indices: range = range(3)) -> list[ImageRequest]:
    return [ImageRequest(c, caption_key(c), j) for c in CAPTIONS for j in indices]


def arrays(images) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def test_cached_images_equal_the_generators_and_are_rendered_once() -> None:
    plain = ProceduralGenerator(size=24, seed=3, diversity=0.7)
    cached = CachedGenerator(ProceduralGenerator(size=24, seed=3, diversity=0.7))
    asked = requests()
    first = cached.render(asked)
    assert cached.rendered == 15
    again = cached.render(list(reversed(asked)) + asked[:2] + asked[:2])  # repeats inside one batch too
    assert cached.rendered == 15
    expected = arrays(plain.render(asked))
    assert all(np.array_equal(a, b) for a, b in zip(arrays(first), expected))
    assert all(np.array_equal(a, b) for a, b in zip(arrays(again), expected[::-1] + expected[:2] * 2))
    more = cached.render(requests(range(2, 5)))  # index 2 is cached, 3 and 4 are new
    assert cached.rendered == 25
    assert all(
        np.array_equal(a, b) for a, b in zip(arrays(more), arrays(plain.render(requests(range(2, 5)))))
    )
    assert cached.seed_for("k", 1) == plain.seed_for("k", 1)
    assert cached.provenance() == plain.provenance()


def test_least_recently_used_images_are_dropped_past_max_images() -> None:
    cached = CachedGenerator(ProceduralGenerator(size=16), max_images=4)
    a, b, c, d, e = requests(range(1))
    cached.render([a, b, c, d])
    cached.render([a])  # a is now the most recently used; b the least
    cached.render([e])
    assert cached.rendered == 5
    cached.render([a, c, d, e])
    assert cached.rendered == 5
    cached.render([b])
    assert cached.rendered == 6


def test_a_settings_copy_renders_the_override_with_its_own_cache() -> None:
    cached = CachedGenerator(ProceduralGenerator(size=24, diversity=0.0))
    cached.render(requests())
    copy = cached.with_settings(diversity=1.0)
    got = copy.render(requests())
    assert copy.rendered == 15 and cached.rendered == 15
    want = ProceduralGenerator(size=24, diversity=1.0).render(requests())
    assert all(np.array_equal(a, b) for a, b in zip(arrays(got), arrays(want)))
    with pytest.raises(ValueError, match="cannot override"):
        cached.with_settings(size=32)


def test_pickled_copies_start_empty() -> None:
    cached = CachedGenerator(ProceduralGenerator(size=16))
    cached.render(requests())
    clone = pickle.loads(pickle.dumps(cached))
    clone.render(requests())
    assert clone.rendered == 15


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="ImageGenerator"):
        CachedGenerator("procedural")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_images"):
        CachedGenerator(ProceduralGenerator(), max_images=0)


@pytest.mark.parametrize("mode", ["per_image", "batched"])
def test_training_batches_are_bit_identical_with_the_cache(mode: str) -> None:
    """Three epochs in which captions come round again: the cache serves repeats, batches do not change."""

    def batches(generator) -> list[dict]:
        dm = GeneratorDataModule(
            generator, num_captions=12, views=2, images_per_caption=3, batch_size=4, num_workers=0,
            augmentation=AugmentationConfig(image_size=16), augmentation_mode=mode, seed=5,
        )  # fmt: skip
        dm.setup("fit")
        loader, out = dm.train_dataloader(), []
        for _ in range(3):
            out.extend(loader)
        return out

    cached = CachedGenerator(ProceduralGenerator(size=20, seed=1))
    plain, with_cache = batches(ProceduralGenerator(size=20, seed=1)), batches(cached)
    assert len(plain) == len(with_cache) == 9
    assert cached.rendered <= 12 * 3 < 9 * 4 * 2  # at most every caption's k images, not every draw
    for p, c in zip(plain, with_cache):
        assert torch.equal(p["images"], c["images"]) and torch.equal(p["caption_ids"], c["caption_ids"])
