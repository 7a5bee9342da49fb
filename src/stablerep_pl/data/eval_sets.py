"""Labelled evaluation sets for probes: train/test splits of `(image tensor, label)` items."""

from __future__ import annotations

import abc
import gzip
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from stablerep_pl.data.captions import OBJECTS, CaptionGrammar
from stablerep_pl.data.generators.base import ImageRequest, caption_key
from stablerep_pl.data.generators.procedural import ProceduralGenerator
from stablerep_pl.data.transforms import eval_transform

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


class ImageListDataset(Dataset):
    """Images (PIL or uint8 arrays) with integer labels, transformed on access."""

    def __init__(self, images: Sequence, labels: Sequence[int], transform: Callable) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, torch.as_tensor(labels), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class EvalSet(abc.ABC):
    """A labelled set with a train split (to fit probes) and a test split (to score them)."""

    name: str = "eval"
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abc.abstractmethod
    def _load(self, split: str) -> Dataset:
        """Build split `train` or `test` (called once per split; the result is cached)."""

    def _dataset(self, split: str) -> Dataset:
        cache = self.__dict__.setdefault("_datasets", {})
        if split not in cache:
            cache[split] = self._load(split)
        return cache[split]

    def train_dataset(self) -> Dataset:
        return self._dataset("train")

    def test_dataset(self) -> Dataset:
        return self._dataset("test")


class ProceduralEvalSet(EvalSet):
    """Held-out procedural images labelled by object class.

    Captions name the object and random other attributes; they are drawn from their own seed and
    rendered with a different base seed than training, so no evaluation image is a training image.
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
    ) -> None:
        self.class_names = tuple(OBJECTS)
        self.image_size, self.seed = image_size, seed
        self.counts = {"train": train_per_class, "test": test_per_class}
        self.generator = ProceduralGenerator(size=render_size, diversity=diversity, seed=seed)

    def _load(self, split: str) -> Dataset:
        rng = np.random.default_rng([self.seed, 0 if split == "train" else 1])
        grammar = CaptionGrammar(seed=self.seed)
        requests, labels = [], []
        for label, obj in enumerate(self.class_names):
            for i, caption in enumerate(grammar.sample_for_object(obj, self.counts[split], rng)):
                requests.append(ImageRequest(caption, f"{split}-{label}-{i}-{caption_key(caption)}", 0))
                labels.append(label)
        images = self.generator.render(requests)
        return ImageListDataset(images, labels, eval_transform(self.image_size))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format MNIST-style datasets ship in."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class FashionMNIST(EvalSet):
    """Fashion-MNIST from Debian's `dataset-fashion-mnist` (no download); grey 28 px → RGB."""

    name = "fashion_mnist"
    class_names = FASHION_MNIST_CLASSES

    def __init__(
        self,
        image_size: int = 32,
        root: str = FASHION_MNIST_DIR,
        train_limit: int | None = 10_000,
        test_limit: int | None = 2_000,
    ) -> None:
        self.root, self.image_size = Path(root), image_size
        self.limits = {"train": train_limit, "test": test_limit}
        if not self.available(root):
            raise FileNotFoundError(
                f"Fashion-MNIST not found under {root}; install it with "
                "`apt-get install dataset-fashion-mnist` or pass root=DIR with the four idx files"
            )

    @staticmethod
    def available(root: str = FASHION_MNIST_DIR) -> bool:
        return (Path(root) / "t10k-labels-idx1-ubyte.gz").exists() or (
            Path(root) / "t10k-labels-idx1-ubyte"
        ).exists()

    def _load(self, split: str) -> Dataset:
        prefix = {"train": "train", "test": "t10k"}[split]

        def find(kind: str) -> Path:
            plain = self.root / f"{prefix}-{kind}"
            return plain if plain.exists() else plain.with_name(plain.name + ".gz")

        images, labels = read_idx(find("images-idx3-ubyte")), read_idx(find("labels-idx1-ubyte"))
        limit = self.limits[split]
        if limit is not None:  # first `limit` items: deterministic and class-balanced enough
            images, labels = images[:limit], labels[:limit]
        pictures = [Image.fromarray(a, mode="L") for a in images]
        return ImageListDataset(pictures, labels.astype(np.int64), eval_transform(self.image_size))


class ImageFolderEvalSet(EvalSet):
    """`root/train/<class>/*.jpg` and `root/<test_split>/<class>/*` (torchvision ImageFolder layout)."""

    name = "image_folder"

    def __init__(
        self, root: str, image_size: int = 224, test_split: str = "val", name: str | None = None
    ) -> None:
        self.root, self.image_size, self.test_split = Path(root), image_size, test_split
        for split in ("train", test_split):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(
                    f"{self.root / split} is missing (expected ImageFolder train/{test_split})"
                )
        self.class_names = tuple(ImageFolder(str(self.root / "train")).classes)
        if name:
            self.name = name

    def _load(self, split: str) -> Dataset:
        folder = ImageFolder(str(self.root / ("train" if split == "train" else self.test_split)),
                              transform=eval_transform(self.image_size))  # fmt: skip
        if tuple(folder.classes) != self.class_names:
            raise ValueError(f"train and {self.test_split} of {self.root} have different classes")
        return folder
