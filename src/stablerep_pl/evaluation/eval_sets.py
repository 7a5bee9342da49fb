"""Labelled evaluation sets for probes: train/test splits of `(image tensor, label)` items."""

from __future__ import annotations

import abc
import gzip
import io
import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from stablerep_pl.augment.transforms import eval_transform
from stablerep_pl.captions.grammar import OBJECTS, CaptionGrammar
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.generation.base import ImageRequest
from stablerep_pl.generation.procedural import ProceduralGenerator

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


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
        """What identifies this set's images: equal fingerprints mean equal features (shared caches)."""
        plain = (int, float, str, bool, type(None), Path, tuple)
        settings = sorted(
            (k, v) for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, plain)
        )
        counts = tuple(sorted(getattr(self, "counts", {}).items()))
        return (type(self).__qualname__, self.name, tuple(settings), counts)


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
        self.render_size, self.diversity = render_size, diversity
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
        return ImageListDataset(self.generator.render(requests), labels)


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
        self.train_limit, self.test_limit = train_limit, test_limit
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
        return ImageListDataset(pictures, labels.astype(np.int64))


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
        folder = ImageFolder(str(self.root / ("train" if split == "train" else self.test_split)))
        if tuple(folder.classes) != self.class_names:
            raise ValueError(f"train and {self.test_split} of {self.root} have different classes")
        return folder


class ShardEvalSet(EvalSet):
    """Labelled images in webdataset shards: `key.{jpg,png,webp}` with an integer label per sample.

    The label is the text of `key.{label_key}` (webdataset's `cls` convention) or, with
    `label_key: json`, the field `label_field` of `key.json`. Every rank reads the (small) evaluation
    shards whole and keeps the encoded bytes in memory, decoding on access; for ImageNet-train-sized
    sets use `ImageFolderEvalSet`.
    """

    def __init__(
        self,
        train_urls: str | list[str],
        test_urls: str | list[str],
        image_size: int = 224,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        label_key: str = "cls",
        label_field: str = "label",
        image_keys: str = "jpg;jpeg;png;webp",
        name: str = "shards",
    ) -> None:
        self.urls = {"train": train_urls, "test": test_urls}
        self.train_urls, self.test_urls = str(train_urls), str(test_urls)
        self.image_size, self.name = image_size, name
        self.label_key, self.label_field, self.image_keys = label_key, label_field, image_keys
        if class_names is not None:
            self.class_names = tuple(class_names)
        else:  # numbered classes, from `num_classes` or the largest training label
            count = num_classes if num_classes is not None else int(self.raw("train").labels.max()) + 1
            self.class_names = tuple(str(i) for i in range(count))

    def _label(self, sample: dict[str, Any]) -> int:
        if self.label_key == "json":
            return int(json.loads(sample["json"])[self.label_field])
        return int(sample[self.label_key].decode().strip())

    def _load(self, split: str) -> Dataset:
        import webdataset as wds

        extensions = self.image_keys.split(";")
        images, labels = [], []
        source = wds.WebDataset(self.urls[split], shardshuffle=False, empty_check=False)
        for sample in source:
            image = next((sample[e] for e in extensions if e in sample), None)
            if image is None or self.label_key not in sample:
                raise ValueError(
                    f"sample {sample.get('__key__')!r} in {sample.get('__url__')} lacks an image "
                    f"({self.image_keys}) or the label key {self.label_key!r}"
                )
            images.append(image)
            labels.append(self._label(sample))
        if not images:
            raise ValueError(f"no samples in {self.urls[split]}")
        if self.class_names and max(labels) >= len(self.class_names):
            raise ValueError(f"label {max(labels)} out of range for {len(self.class_names)} classes")
        return ImageListDataset(images, labels, decode=decode_rgb)


def decode_rgb(data: bytes) -> Image.Image:
    """Encoded image bytes → RGB PIL image."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
