"""Evaluation sets from the user's own files: an ImageFolder tree or labelled webdataset shards."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from stablerep_pl.evaluation.eval_sets.base import EvalSet, ImageListDataset


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

    The label is `key.{label_key}` (webdataset's `cls` convention, or any key holding the integer as
    text) or, with `label_key: json`, the field `label_field` of `key.json`. Every rank reads the
    (small) evaluation shards whole and keeps the encoded bytes in memory, decoding on access with
    webdataset's PIL decoder; for ImageNet-train-sized sets use `ImageFolderEvalSet`.
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

    def _label(self, key: str, url: str, value: Any) -> int:
        """An integer from the decoded label entry (int for `cls`, dict for `json`, text or bytes)."""
        try:
            return int(value[self.label_field] if self.label_key == "json" else value)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"sample {key!r} in {url}: no integer label in {self.label_key!r}: {err}"
            ) from err

    def _load(self, split: str) -> Dataset:
        import webdataset as wds

        # Only the label is decoded here (webdataset's basic handlers: cls → int, json → dict); the
        # images stay encoded until accessed. Missing entries come back as None, to name the sample.
        samples = (
            wds.WebDataset(self.urls[split], shardshuffle=False, empty_check=False)
            .decode(only=[self.label_key])
            .to_tuple("__key__", "__url__", self.image_keys, self.label_key, missing_is_error=False)
        )
        images, labels = [], []
        for key, url, image, label in samples:
            if image is None or label is None:
                raise ValueError(
                    f"sample {key!r} in {url} lacks an image ({self.image_keys}) or the label key "
                    f"{self.label_key!r}"
                )
            images.append(image)
            labels.append(self._label(key, url, label))
        if not images:
            raise ValueError(f"no samples in {self.urls[split]}")
        if self.class_names and max(labels) >= len(self.class_names):
            raise ValueError(f"label {max(labels)} out of range for {len(self.class_names)} classes")
        # webdataset's image handler picks PIL by the extension; PIL reads the real format from the bytes.
        decode = functools.partial(wds.autodecode.ImageHandler("pilrgb"), "image.jpg")
        return ImageListDataset(images, labels, decode=decode)
