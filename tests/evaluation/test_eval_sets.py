import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from stablerep_pl.captions.grammar import OBJECTS
from stablerep_pl.evaluation.eval_sets import EvalSet, FashionMNIST, ProceduralEvalSet
from stablerep_pl.generation.procedural import ProceduralGenerator


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


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_default_generator_is_the_procedural_one_at_render_size_diversity_and_seed() -> None:
    settings = dict(image_size=24, train_per_class=2, test_per_class=1, seed=11)
    default = ProceduralEvalSet(render_size=32, diversity=0.3, **settings)
    explicit = ProceduralEvalSet(generator=ProceduralGenerator(size=32, diversity=0.3, seed=11), **settings)
    for split in ("train", "test"):
        pairs = zip(default.raw(split).images, explicit.raw(split).images, strict=True)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs)
    assert default.raw("train").images[0].size == (32, 32)


def test_generator_is_a_setting_from_yaml_and_part_of_the_fingerprint() -> None:
    from jsonargparse import ArgumentParser

    def parsed(generator_seed: int) -> EvalSet:
        parser = ArgumentParser()
        parser.add_argument("--data", type=EvalSet)
        generator = {"class_path": "stablerep_pl.generation.procedural.ProceduralGenerator",
                     "init_args": {"size": 20, "diversity": 0.9, "seed": generator_seed}}  # fmt: skip
        init_args = {"image_size": 16, "render_size": 32, "train_per_class": 1, "test_per_class": 1,
                     "generator": generator}  # fmt: skip
        config = {"data": {"class_path": "stablerep_pl.evaluation.eval_sets.ProceduralEvalSet",
                           "init_args": init_args}}  # fmt: skip
        return parser.instantiate_classes(parser.parse_object(config)).data

    es = parsed(5)
    assert (es.generator.size, es.generator.diversity, es.generator.seed) == (20, 0.9, 5)
    assert es.raw("train").images[0].size == (20, 20)  # rendered by it, not at render_size
    default = ProceduralEvalSet(image_size=16, render_size=32, train_per_class=1, test_per_class=1)
    fingerprints = {es.fingerprint(), parsed(5).fingerprint(), parsed(6).fingerprint(), default.fingerprint()}
    assert len(fingerprints) == 3  # the same config agrees; another generator seed or the default differs


def test_gzipped_idx_files_are_unpacked_once_into_the_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 3), ("t10k", 2)]:
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n))
    cache = tmp_path / "cache"
    FashionMNIST(root=str(tmp_path), cache_dir=str(cache)).raw("train")
    (images,) = cache.rglob("train-images-idx3-ubyte")
    written = images.stat().st_mtime_ns
    FashionMNIST(root=str(tmp_path), cache_dir=str(cache)).raw("train")
    assert images.stat().st_mtime_ns == written and not list(cache.rglob(".*"))  # reused, no temporaries
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([7, 8, 9]))  # a changed source ...
    labels = FashionMNIST(root=str(tmp_path), cache_dir=str(cache)).raw("train").labels
    assert labels.tolist() == [7, 8, 9]  # ... is unpacked again, not served stale


def test_plain_idx_files_are_read_and_bad_ones_are_a_clear_error(tmp_path: Path) -> None:
    data = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 251
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", data, compress=False)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.array([4, 1]), compress=False)
    es = FashionMNIST(root=str(tmp_path), cache_dir=str(tmp_path / "unused"))
    assert [np.asarray(im).tolist() for im in es.raw("test").images] == data.tolist()
    assert es.raw("test").labels.tolist() == [4, 1] and not (tmp_path / "unused").exists()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        es.raw("train")


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written = {}
    for prefix, n in [("train", 6), ("t10k", 4)]:
        written[prefix] = rng.integers(0, 255, (n, 28, 28))
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", written[prefix])
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    es = FashionMNIST(image_size=32, root=str(tmp_path), train_limit=5, cache_dir=str(tmp_path / "cache"))
    assert len(es.train_dataset()) == 5 and len(es.test_dataset()) == 4
    x, y = es.test_dataset()[3]
    assert x.shape == (3, 32, 32) and int(y) == 3
    assert np.array_equal(np.asarray(es.raw("test").images[3]), written["t10k"][3])
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        FashionMNIST(root=str(tmp_path / "missing"))


@pytest.mark.skipif(not FashionMNIST.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist(tmp_path: Path) -> None:
    es = FashionMNIST(image_size=28, train_limit=100, test_limit=50, cache_dir=str(tmp_path))
    train = es.train_dataset()
    assert len(train) == 100 and es.num_classes == 10
    assert int(train.labels[0]) == 9  # the first training image of Fashion-MNIST is an ankle boot
    assert set(train.labels.tolist()) <= set(range(10))
    assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the published first labels
    assert es.raw("test").labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    # Pixels against an independent parse of the gzipped file: 16-byte header, then 28×28 bytes per image.
    with gzip.open(Path(es.root) / "train-images-idx3-ubyte.gz") as f:
        expected = np.frombuffer(f.read(16 + 100 * 28 * 28)[16:], np.uint8).reshape(100, 28, 28)
    assert np.array_equal(np.stack([np.asarray(im) for im in es.raw("train").images]), expected)


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
    assert x[2].mean() > 2 > -1 > x[0].mean()  # class1 is the blue folder: normalised blue high, red low
    assert len(es.train_dataset()) == 6
    with pytest.raises(FileNotFoundError, match="val"):
        ImageFolderEvalSet(str(tmp_path / "train"))


def write_labelled_shard(
    path: Path, labels: list[int], label_key: str = "cls", image_key: str = "png", skip_image: int = -1
) -> None:
    import io
    import json

    import webdataset as wds
    from PIL import Image

    with wds.TarWriter(str(path)) as sink:
        for i, label in enumerate(labels):
            buffer = io.BytesIO()
            Image.new("RGB", (20, 16), (40 * label, 0, 255 - 40 * label)).save(buffer, format="PNG")
            value = json.dumps({"label": label}) if label_key == "json" else str(label)
            sample = {"__key__": f"s{i:04d}", label_key: value}
            if i != skip_image:
                sample[image_key] = buffer.getvalue()
            sink.write(sample)


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


def test_shard_images_decode_to_the_written_pixels_and_bad_samples_are_named(tmp_path: Path) -> None:
    from stablerep_pl.evaluation.eval_sets import ShardEvalSet

    write_labelled_shard(tmp_path / "png.tar", [0, 2])
    write_labelled_shard(tmp_path / "webp.tar", [1], image_key="webp")  # PIL reads the real format
    es = ShardEvalSet(str(tmp_path / "png.tar"), str(tmp_path / "webp.tar"), num_classes=3)
    image, label = es.raw("train")[1]
    assert image.mode == "RGB" and image.size == (20, 16) and int(label) == 2
    assert np.asarray(image)[0, 0].tolist() == [80, 0, 175]  # (40·2, 0, 255 − 40·2), lossless PNG
    assert np.asarray(es.raw("test")[0][0])[5, 5].tolist() == pytest.approx([40, 0, 215], abs=3)  # lossy webp
    write_labelled_shard(tmp_path / "holes.tar", [0, 1, 2], skip_image=1)
    with pytest.raises(ValueError, match=r"'s0001' in .*holes\.tar lacks an image"):
        ShardEvalSet(str(tmp_path / "holes.tar"), str(tmp_path / "png.tar"), num_classes=3).raw("train")
    write_labelled_shard(tmp_path / "field.tar", [0], label_key="json")
    with pytest.raises(ValueError, match=r"'s0000' .* no integer label in 'json'"):
        ShardEvalSet(str(tmp_path / "field.tar"), str(tmp_path / "png.tar"), num_classes=3,
                     label_key="json", label_field="class").raw("train")  # fmt: skip
    (tmp_path / "empty.tar").write_bytes(b"\0" * 1024)  # an empty tar archive
    with pytest.raises(ValueError, match="no samples"):
        ShardEvalSet(str(tmp_path / "empty.tar"), str(tmp_path / "png.tar"), num_classes=3).raw("train")


def test_eval_set_transform_is_chosen_per_use() -> None:
    from stablerep_pl.augment.transforms import probe_train_transform

    es = ProceduralEvalSet(image_size=24, render_size=32, train_per_class=1, test_per_class=1)
    augmented = es.train_dataset(probe_train_transform(16))
    assert augmented[0][0].shape == (3, 16, 16) and es.train_dataset()[0][0].shape == (3, 24, 24)
    assert augmented.labels.tolist() == list(range(es.num_classes))
    with pytest.raises(ValueError, match="split"):
        es.raw("val")
