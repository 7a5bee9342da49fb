"""DiffusionGenerator on a tiny random-weight Stable Diffusion pipeline (never the hub)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.tiny_sd import build_tiny_sd_pipeline, save_tiny_sd_pipeline
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.generation import ImageRequest
from stablerep_pl.generation.diffusion import DiffusionGenerator

SETTINGS = dict(num_inference_steps=3, output_size=16, guidance_scale=2.0, device="cpu", seed=5)


@pytest.fixture(scope="module")
def generator() -> DiffusionGenerator:
    return DiffusionGenerator.from_pipeline(build_tiny_sd_pipeline(), **SETTINGS)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_images_have_saved_size_and_are_rgb(generator: DiffusionGenerator) -> None:
    [[a, b]] = generator.generate(["a red star"], images_per_caption=2)
    assert a.size == (16, 16) and a.mode == "RGB"
    assert np.abs(pixels(a) - pixels(b)).mean() > 1  # own seed per image


def test_single_image_regenerated_alone_equals_the_batch(generator: DiffusionGenerator) -> None:
    captions = ["a red star", "a blue ring on grass", "a green heart"]
    batch = generator.generate(captions, images_per_caption=2)
    key = caption_key(captions[1])
    [alone] = generator.render([ImageRequest(captions[1], key, 1)])
    assert np.abs(pixels(alone) - pixels(batch[1][1])).max() <= 1  # float reductions may differ by 1 level
    again = generator.generate(captions, images_per_caption=2)
    assert all(np.array_equal(pixels(x), pixels(y)) for r, s in zip(batch, again) for x, y in zip(r, s))


def test_base_seed_changes_images() -> None:
    pipe = build_tiny_sd_pipeline()
    a = DiffusionGenerator.from_pipeline(pipe, **{**SETTINGS, "seed": 1}).generate(["a star"], 1)[0][0]
    b = DiffusionGenerator.from_pipeline(pipe, **{**SETTINGS, "seed": 2}).generate(["a star"], 1)[0][0]
    assert np.abs(pixels(a) - pixels(b)).mean() > 1


def test_loads_a_local_folder_and_swaps_the_scheduler(tmp_path: Path) -> None:
    folder = save_tiny_sd_pipeline(tmp_path / "tiny")
    gen = DiffusionGenerator(model=str(folder), scheduler="EulerDiscreteScheduler", **SETTINGS)
    [[image]] = gen.generate(["a red star"], 1)
    assert image.size == (16, 16)
    info = gen.provenance()
    assert info["scheduler"] == "EulerDiscreteScheduler" and info["model"] == str(folder)
    assert info["guidance_scale"] == 2.0 and info["num_inference_steps"] == 3 and info["base_seed"] == 5


def test_generator_pickles_without_weights(generator: DiffusionGenerator) -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(generator))
    assert clone._pipe is None and clone.model == generator.model


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="num_inference_steps"):
        DiffusionGenerator(num_inference_steps=0)
    with pytest.raises(ValueError, match="dtype"):
        DiffusionGenerator(dtype="float8")
    with pytest.raises(ValueError, match="no scheduler class"):
        DiffusionGenerator.from_pipeline(build_tiny_sd_pipeline(), scheduler="NoSuchScheduler")


def test_each_distinct_caption_is_encoded_once(generator: DiffusionGenerator) -> None:
    # k images of a caption share its text embedding: the encoder sees each caption once per batch.
    pipe = generator.pipe
    seen: list[list[str]] = []
    encode = pipe.encode_prompt

    def counting(*args, **kwargs):
        seen.append(list(kwargs["prompt"]))
        return encode(*args, **kwargs)

    pipe.encode_prompt = counting
    try:
        captions = ["a red star", "a blue ring on grass", "a red star"]
        positive, negative = generator._encode_once_per_caption(pipe, captions, guided=True)
    finally:
        del pipe.encode_prompt
    assert seen == [["a red star", "a blue ring on grass"]]
    reference, reference_negative = encode(
        prompt=captions, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True
    )
    assert torch.equal(positive, reference) and torch.equal(negative, reference_negative)
    assert torch.equal(positive[0], positive[2])
