import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from stablerep_pl.captions.grammar import OBJECTS
from stablerep_pl.evaluation.eval_sets import FashionMNIST, ProceduralEvalSet, read_idx


def test_procedural_eval_set_is_balanced_deterministic_and_held_out() -> None:
    es = ProceduralEvalSet(image_size=24, render_size=32, train_per_class=3, test_per_class=2)
    train, test = es.train_dataset(), es.test_dataset()
    assert es.num_classes == len(OBJECTS) and len(train) == 3 * len(OBJECTS) and len(test) == 2 * len(OBJECTS)
    assert torch.bincount(train.labels).tolist() == [3] * len(OBJECTS)
    x, y = train[0]
    assert x.shape == (3, 24, 24) and int(y) == 0
    again = ProceduralEvalSet(image_size=24, render_size=32, train_per_class=3, test_per_class=2)
    assert torch.equal(again.train_dataset()[5][0], train[5][0])
    train_pixels = {np.asarray(im).tobytes() for im in es.raw("train").images}
    assert not any(np.asarray(im).tobytes() in train_pixels for im in es.raw("test").images)


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

    from stablerep_pl.evaluation.eval_sets import ImageFolderEvalSet

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


def write_labelled_shard(path: Path, labels: list[int], label_key: str = "cls") -> None:
    import io
    import json

    import webdataset as wds
    from PIL import Image

    with wds.TarWriter(str(path)) as sink:
        for i, label in enumerate(labels):
            buffer = io.BytesIO()
            Image.new("RGB", (20, 16), (40 * label, 0, 255 - 40 * label)).save(buffer, format="PNG")
            value = json.dumps({"label": label}) if label_key == "json" else str(label)
            sink.write({"__key__": f"s{i:04d}", "png": buffer.getvalue(), label_key: value})


def test_shard_eval_set_reads_labels_from_cls_or_json(tmp_path: Path) -> None:
    from stablerep_pl.evaluation.eval_sets import ShardEvalSet

    write_labelled_shard(tmp_path / "train-000.tar", [0, 1, 2, 1])
    write_labelled_shard(tmp_path / "train-001.tar", [2, 0])
    write_labelled_shard(tmp_path / "test.tar", [1, 2], label_key="json")
    es = ShardEvalSet(str(tmp_path / "train-{000..001}.tar"), str(tmp_path / "train-001.tar"), image_size=8)
    assert es.num_classes == 3 and es.class_names == ("0", "1", "2")  # inferred from the labels
    assert es.raw("train").labels.tolist() == [0, 1, 2, 1, 2, 0]
    x, y = es.train_dataset()[2]
    assert x.shape == (3, 8, 8) and int(y) == 2
    named = ShardEvalSet(
        str(tmp_path / "train-000.tar"), str(tmp_path / "test.tar"), image_size=8,
        class_names=["a", "b", "c"], label_key="json", name="toy",
    )  # fmt: skip
    assert named.raw("test").labels.tolist() == [1, 2] and named.name == "toy"
    with pytest.raises(ValueError, match="label key"):
        named.raw("train")  # train-000 has `cls`, not `json`
    with pytest.raises(ValueError, match="out of range"):
        ShardEvalSet(str(tmp_path / "train-000.tar"), str(tmp_path / "test.tar"), num_classes=2).raw("train")


def test_eval_set_transform_is_chosen_per_use() -> None:
    from stablerep_pl.augment.transforms import probe_train_transform

    es = ProceduralEvalSet(image_size=24, render_size=32, train_per_class=1, test_per_class=1)
    augmented = es.train_dataset(probe_train_transform(16))
    assert augmented[0][0].shape == (3, 16, 16) and es.train_dataset()[0][0].shape == (3, 24, 24)
    assert augmented.labels.tolist() == list(range(es.num_classes))
    with pytest.raises(ValueError, match="split"):
        es.raw("val")
