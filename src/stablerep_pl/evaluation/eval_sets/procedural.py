"""Held-out images of any caption-driven generator, labelled by the object their caption names.

Evaluation depends on the generation package only through the generator interface: the generator
is a setting (`generator: {class_path, init_args}` in YAML). The default, the embedded procedural
renderer, is itself written as such a config and built on first use, so no evaluation module
imports a concrete generator.
"""

from __future__ import annotations

import json

import numpy as np
from lightning.pytorch.cli import instantiate_class
from torch.utils.data import Dataset

from stablerep_pl.captions.grammar import OBJECTS, CaptionGrammar
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.evaluation.eval_sets.base import EvalSet, ImageListDataset
from stablerep_pl.generation.base import ImageGenerator, ImageRequest

DEFAULT_GENERATOR = "stablerep_pl.generation.procedural.ProceduralGenerator"


class ProceduralEvalSet(EvalSet):
    """Held-out generated images labelled by object class.

    Captions name the object and random other attributes; they are drawn from their own seed and
    rendered with a different base seed than training, so no evaluation image is a training image.
    `generator` renders them (any `ImageGenerator`); when omitted, the procedural generator at
    `render_size` px with `diversity` and base seed `seed`. `render_size` and `diversity` only
    configure that default.
    """

    name = "procedural"

    def __init__(
        self,
        image_size: int = 32,
        render_size: int = 64,
        train_per_class: int = 50,
        test_per_class: int = 50,
        diversity: float = 0.5,
        seed: int = 1_000_003,
        generator: ImageGenerator | None = None,
    ) -> None:
        self.class_names = tuple(OBJECTS)
        self.image_size, self.seed = image_size, seed
        self.render_size, self.diversity = render_size, diversity
        self.counts = {"train": train_per_class, "test": test_per_class}
        self._given_generator = generator
        self._default_generator: ImageGenerator | None = None

    @property
    def generator(self) -> ImageGenerator:
        """The configured generator, or the default procedural one (built on first use)."""
        if self._given_generator is not None:
            return self._given_generator
        if self._default_generator is None:
            init_args = {"size": self.render_size, "diversity": self.diversity, "seed": self.seed}
            default = {"class_path": DEFAULT_GENERATOR, "init_args": init_args}
            self._default_generator = instantiate_class((), default)
        return self._default_generator

    def fingerprint(self) -> tuple:
        """The settings, plus a given generator's provenance: another generator, other images."""
        base = super().fingerprint()
        if self._given_generator is None:
            return base
        return (*base, json.dumps(self._given_generator.provenance(), sort_keys=True, default=str))

    def _load(self, split: str) -> Dataset:
        rng = np.random.default_rng([self.seed, 0 if split == "train" else 1])
        grammar = CaptionGrammar(seed=self.seed)
        requests, labels = [], []
        for label, obj in enumerate(self.class_names):
            for i, caption in enumerate(grammar.sample_for_object(obj, self.counts[split], rng)):
                requests.append(ImageRequest(caption, f"{split}-{label}-{i}-{caption_key(caption)}", 0))
                labels.append(label)
        return ImageListDataset(self.generator.render(requests), labels)
