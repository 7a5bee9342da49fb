"""Object labels for SupCon: the label is the object the generator renders, in every batch."""

from __future__ import annotations

import pytest
import torch

from stablerep_pl.augment.transforms import AugmentationConfig
from stablerep_pl.captions.grammar import OBJECTS, procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.data.labels import LabelledGeneratorDataModule, object_label
from stablerep_pl.generation.base import ImageRequest
from stablerep_pl.generation.procedural import ProceduralGenerator


def test_label_is_the_rendered_object_also_for_captions_without_an_object_noun() -> None:
    generator = ProceduralGenerator(size=16, diversity=0.5, seed=3)
    captions = [*procedural_captions(40, seed=1, p_attribute=0.5), "a red shape", "a striped thing on a grass background", "a disc"]  # fmt: skip
    for caption in captions:
        rendered = generator.resolve_attributes(ImageRequest(caption, caption_key(caption), 0)).object
        assert OBJECTS[object_label(caption)] == rendered, caption
    assert OBJECTS[object_label("a disc")] == "circle"  # synonyms resolve as the renderer does


def _module(label_mode: str) -> LabelledGeneratorDataModule:
    module = LabelledGeneratorDataModule(
        generator=ProceduralGenerator(size=16, diversity=0.0, seed=0),
        num_captions=64, images_per_caption=3, views=2, batch_size=8, num_workers=0, seed=0,
        augmentation=AugmentationConfig(image_size=16), label_mode=label_mode,
    )  # fmt: skip
    module.setup("fit")
    return module


def test_object_mode_changes_only_the_ids() -> None:
    by_caption, by_object = _module("caption"), _module("object")
    plain, labelled = next(iter(by_caption.train_dataloader())), next(iter(by_object.train_dataloader()))
    assert plain["caption"] == labelled["caption"]
    assert torch.equal(plain["images"], labelled["images"])  # same draws, same pixels
    assert labelled["caption_ids"].tolist() == [object_label(c) for c in labelled["caption"]]
    assert len(set(plain["caption_ids"].tolist())) == 8  # caption mode: one id per caption


def test_unknown_label_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="label_mode"):
        _module("class")
