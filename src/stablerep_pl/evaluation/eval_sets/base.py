"""What every evaluation set is: a train split to fit probes on and a test split to score them."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from stablerep_pl.augment.transforms import eval_transform


class ImageListDataset(Dataset):
    """In-memory images (PIL images, arrays or encoded bytes) with integer labels, untransformed."""

    def __init__(self, images: Sequence, labels: Sequence[int], decode: Callable | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.decode = images, torch.as_tensor(labels), decode

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        image = self.images[index]
        return (self.decode(image) if self.decode else image), self.labels[index]


class TransformedDataset(Dataset):
    """`(image, label)` items of `base` with `transform` applied to the image."""

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base, self.transform = base, transform

    @property
    def labels(self) -> torch.Tensor:
        labels = getattr(self.base, "labels", None)
        return torch.as_tensor(self.base.targets if labels is None else labels)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, label = self.base[index]
        return self.transform(image), label


class EvalSet(abc.ABC):
    """A labelled set with a train split (to fit probes) and a test split (to score them).

    Subclasses load each split once as untransformed `(image, label)` items; the transform is chosen
    per use: the evaluation transform (resize + centre crop) by default, or the probe protocol's
    training augmentation.
    """

    name: str = "eval"
    class_names: tuple[str, ...] = ()
    image_size: int = 224

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abc.abstractmethod
    def _load(self, split: str) -> Dataset:
        """Build split `train` or `test` as untransformed items (called once per split; cached)."""

    def raw(self, split: str) -> Dataset:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        cache = self.__dict__.setdefault("_datasets", {})
        if split not in cache:
            cache[split] = self._load(split)
        return cache[split]

    def dataset(self, split: str, transform: Callable | None = None) -> TransformedDataset:
        return TransformedDataset(self.raw(split), transform or eval_transform(self.image_size))

    def train_dataset(self, transform: Callable | None = None) -> TransformedDataset:
        return self.dataset("train", transform)

    def test_dataset(self, transform: Callable | None = None) -> TransformedDataset:
        return self.dataset("test", transform)

    def fingerprint(self) -> tuple:
        """What identifies this set's images: equal fingerprints mean equal features (shared caches).

        Public plain-valued attributes are the settings; private ones (caches, where files are
        unpacked) do not change the images and stay out.
        """
        plain = (int, float, str, bool, type(None), Path, tuple)
        settings = sorted(
            (k, v) for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, plain)
        )
        counts = tuple(sorted(getattr(self, "counts", {}).items()))
        return (type(self).__qualname__, self.name, tuple(settings), counts)
