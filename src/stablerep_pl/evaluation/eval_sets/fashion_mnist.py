"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (no download), read with torchvision.

torchvision's idx readers (`read_image_file`, `read_label_file`) take uncompressed files, and Debian
ships them gzipped; each `.gz` is decompressed once into a cache directory (atomically, so parallel
ranks or an interrupted run never see half a file) and read from there.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.mnist import read_image_file, read_label_file

from stablerep_pl.evaluation.eval_sets.base import EvalSet, ImageListDataset

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stablerep_pl" / "fashion_mnist"


def decompressed(gz_path: Path, cache_dir: Path) -> Path:
    """The uncompressed copy of `gz_path` in `cache_dir`, written on first use.

    The copy's folder is named after the source's path, size and modification time, so a changed or
    different source is never served a stale copy.
    """
    stat = gz_path.stat()
    tag = hashlib.blake2b(f"{gz_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode(), digest_size=8)
    target = cache_dir / tag.hexdigest() / gz_path.name.removesuffix(".gz")
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as out:
        try:
            with gzip.open(gz_path, "rb") as source:
                shutil.copyfileobj(source, out, length=1 << 20)
        except BaseException:
            os.unlink(out.name)
            raise
    os.replace(out.name, target)
    return target


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple:
    """(uint8 images [N, H, W], int64 labels [N]) with torchvision's readers and a clear error."""
    try:
        return read_image_file(str(images_path)), read_label_file(str(labels_path))
    except (AssertionError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{images_path} / {labels_path}: not unsigned-byte IDX files (MNIST format): {err}"
        ) from err


class FashionMNIST(EvalSet):
    """Fashion-MNIST; grey 28 px → RGB. `root` holds the four idx files, gzipped or not."""

    name = "fashion_mnist"
    class_names = FASHION_MNIST_CLASSES

    def __init__(
        self,
        image_size: int = 32,
        root: str = FASHION_MNIST_DIR,
        train_limit: int | None = 10_000,
        test_limit: int | None = 2_000,
        cache_dir: str | None = None,
    ) -> None:
        self.root, self.image_size = Path(root), image_size
        self.limits = {"train": train_limit, "test": test_limit}
        self.train_limit, self.test_limit = train_limit, test_limit
        # Where gzipped files are unpacked does not change the images: private, out of the fingerprint.
        self._cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
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

    def _idx_file(self, name: str) -> Path:
        plain = self.root / name
        return plain if plain.exists() else decompressed(self.root / f"{name}.gz", self._cache_dir)

    def _load(self, split: str) -> Dataset:
        prefix = {"train": "train", "test": "t10k"}[split]
        images, labels = read_idx_pair(
            self._idx_file(f"{prefix}-images-idx3-ubyte"), self._idx_file(f"{prefix}-labels-idx1-ubyte")
        )
        limit = self.limits[split]
        if limit is not None:  # first `limit` items: deterministic and class-balanced enough
            images, labels = images[:limit], labels[:limit]
        pictures = [Image.fromarray(a) for a in images.numpy()]
        return ImageListDataset(pictures, labels)
