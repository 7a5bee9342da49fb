import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from stablerep_pl.data.captions import OBJECTS
from stablerep_pl.data.eval_sets import FashionMNIST, ProceduralEvalSet, read_idx


def test_procedural_eval_set_is_balanced_deterministic_and_held_out() -> None:
    es = ProceduralEvalSet(image_size=24, render_size=32, train_per_class=3, test_per_class=2)
    train, test = es.train_dataset(), es.test_dataset()
    assert es.num_classes == len(OBJECTS) and len(train) == 3 * len(OBJECTS) and len(test) == 2 * len(OBJECTS)
    assert torch.bincount(train.labels).tolist() == [3] * len(OBJECTS)
    x, y = train[0]
    assert x.shape == (3, 24, 24) and int(y) == 0
    again = ProceduralEvalSet(image_size=24, render_size=32, train_per_class=3, test_per_class=2)
    assert torch.equal(again.train_dataset()[5][0], train[5][0])
    train_pixels = {np.asarray(im).tobytes() for im in train.images}
    assert not any(np.asarray(im).tobytes() in train_pixels for im in test.images)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte.gz", data)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), data)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 6), ("t10k", 4)]:
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    es = FashionMNIST(image_size=32, root=str(tmp_path), train_limit=5)
    assert len(es.train_dataset()) == 5 and len(es.test_dataset()) == 4
    x, y = es.test_dataset()[3]
    assert x.shape == (3, 32, 32) and int(y) == 3
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        FashionMNIST(root=str(tmp_path / "missing"))


@pytest.mark.skipif(not FashionMNIST.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    es = FashionMNIST(image_size=28, train_limit=100, test_limit=50)
    train = es.train_dataset()
    assert len(train) == 100 and es.num_classes == 10
    assert int(train.labels[0]) == 9  # the first training image of Fashion-MNIST is an ankle boot
    assert set(train.labels.tolist()) <= set(range(10))


def test_image_folder_eval_set(tmp_path: Path) -> None:
    from PIL import Image

    from stablerep_pl.data.eval_sets import ImageFolderEvalSet

    for split, n in [("train", 3), ("val", 2)]:
        for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
            folder = tmp_path / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), colour).save(folder / f"{i}.jpg")
    es = ImageFolderEvalSet(str(tmp_path), image_size=24, name="toy")
    assert es.class_names == ("class0", "class1") and es.name == "toy"
    x, y = es.test_dataset()[3]
    assert x.shape == (3, 24, 24) and y == 1
    assert len(es.train_dataset()) == 6
    with pytest.raises(FileNotFoundError, match="val"):
        ImageFolderEvalSet(str(tmp_path / "train"))
