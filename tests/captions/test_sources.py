import json
from pathlib import Path

import pytest

from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import (
    CsvCaptions,
    JsonlCaptions,
    ParquetCaptions,
    TemplateCaptions,
    TextCaptions,
    open_captions,
)


def test_text_file_skips_and_counts_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"a red star\n\n   \nbad \xff\xfe bytes\na  red   star\na blue ring\r\n")
    source = TextCaptions(str(path))
    captions = source.load()
    assert [c.text for c in captions] == ["a red star", "a blue ring"]
    assert captions[0].key == caption_key("a red star")
    s = source.stats
    assert (s.read, s.kept, s.empty, s.undecodable, s.duplicates) == (6, 2, 2, 1, 1)
    assert "c.txt:4" in " ".join(s.problems)


def test_strict_mode_raises_with_location(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("ok\n\n")
    with pytest.raises(ValueError, match=r"c.txt:2"):
        TextCaptions(str(path), strict=True).load()


def test_keys_are_stable_under_reordering(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x one\ny two\nz three\n")
    b.write_text("z three\nx one\ny two\n")
    keys_a = {c.text: c.key for c in TextCaptions(str(a)).load()}
    keys_b = {c.text: c.key for c in TextCaptions(str(b)).load()}
    assert keys_a == keys_b


def test_csv_tsv_and_key_column(tmp_path: Path) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_text("id\tcaption\n7\ta dog\n8\t\n9\ta cat\n")
    captions = CsvCaptions(str(tsv), key_column="id").load()
    assert [(c.key, c.text) for c in captions] == [("7", "a dog"), ("9", "a cat")]
    with pytest.raises(ValueError, match="no column 'text'"):
        CsvCaptions(str(tsv), column="text").load()


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [
        json.dumps({"caption": "a dog"}),
        "{not json",
        json.dumps({"other": 1}),
        json.dumps({"caption": 5}),
    ]
    path.write_text("\n".join(rows) + "\n")
    source = JsonlCaptions(str(path))
    assert [c.text for c in source.load()] == ["a dog"]
    assert source.stats.undecodable == 3


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"caption": ["a dog", None, "a cat"], "k": [1, 2, 3]}), path)
    captions = ParquetCaptions(str(path), key_column="k").load()
    assert [(c.key, c.text) for c in captions] == [("1", "a dog"), ("3", "a cat")]


def test_templates_and_suffix_dispatch(tmp_path: Path) -> None:
    source = TemplateCaptions(["dog", "cat"], templates=["a photo of a {}.", "a {} in the wild"])
    assert [c.text for c in source.load()] == [
        "a photo of a dog.", "a dog in the wild", "a photo of a cat.", "a cat in the wild",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="placeholder"):
        TemplateCaptions(["dog"], templates=["no slot"])
    assert isinstance(open_captions(str(tmp_path / "x.tsv")), CsvCaptions)
    assert isinstance(open_captions(str(tmp_path / "x.jsonl")), JsonlCaptions)
    assert isinstance(open_captions(str(tmp_path / "x.txt")), TextCaptions)
