"""Caption files → `(key, text)` records with stable keys, deduplication and counted rejects.

Keys are the content hash of the caption text unless the file carries its own key column, so a
caption keeps its key (and hence its images' seeds) however the file is reordered or sharded.
Bad rows (empty, undecodable, missing column) are skipped and counted, or raise in `strict` mode.
"""

from __future__ import annotations

import abc
import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stablerep_pl.captions.keys import caption_key, normalize_caption


@dataclass(frozen=True)
class Caption:
    key: str
    text: str


@dataclass
class CaptionStats:
    read: int = 0
    kept: int = 0
    empty: int = 0
    undecodable: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.kept} captions kept of {self.read} read "
            f"({self.duplicates} duplicates, {self.empty} empty, {self.undecodable} undecodable skipped)"
        )


class CaptionSource(abc.ABC):
    """Yields raw `(key or None, text or None, where)` rows; `load()` cleans and deduplicates them."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.stats = CaptionStats()

    @abc.abstractmethod
    def rows(self) -> Iterator[tuple[str | None, str | None, str]]:
        """`text=None` marks an undecodable row; `where` locates it for messages."""

    def _reject(self, kind: str, where: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        message = f"{kind} caption at {where}"
        if self.strict:
            raise ValueError(message + " (strict mode; set strict=False to skip and count such rows)")
        if len(self.stats.problems) < 20:
            self.stats.problems.append(message)

    def load(self) -> list[Caption]:
        self.stats = CaptionStats()
        seen: set[str] = set()
        captions = []
        for key, text, where in self.rows():
            self.stats.read += 1
            if text is None:
                self._reject("undecodable", where)
                continue
            text = normalize_caption(text)
            if not text:
                self._reject("empty", where)
                continue
            key = key or caption_key(text)
            if key in seen:
                self.stats.duplicates += 1
                continue
            seen.add(key)
            captions.append(Caption(key, text))
        self.stats.kept = len(captions)
        return captions


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield number, None


class TextCaptions(CaptionSource):
    """One caption per line."""

    def __init__(self, path: str, strict: bool = False) -> None:
        super().__init__(strict)
        self.path = Path(path)

    def rows(self) -> Iterator[tuple[str | None, str | None, str]]:
        for number, line in _decoded_lines(self.path):
            yield None, line, f"{self.path}:{number}"


class CsvCaptions(CaptionSource):
    """A CSV/TSV column (delimiter from the suffix unless given), optional key column."""

    def __init__(
        self, path: str, column: str = "caption", key_column: str | None = None,
        delimiter: str | None = None, strict: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(strict)
        self.path, self.column, self.key_column = Path(path), column, key_column
        self.delimiter = delimiter or ("\t" if self.path.suffix.lower() in {".tsv", ".tab"} else ",")

    def rows(self) -> Iterator[tuple[str | None, str | None, str]]:
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        reader = csv.DictReader(io.StringIO(text), delimiter=self.delimiter)
        if reader.fieldnames is None or self.column not in reader.fieldnames:
            raise ValueError(f"{self.path} has no column {self.column!r}; columns: {reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            value = row.get(self.column)
            bad = value is None or "\ufffd" in value
            key = row.get(self.key_column) if self.key_column else None
            yield key, None if bad else value, f"{self.path}:{number}"


class JsonlCaptions(CaptionSource):
    """One JSON object per line with the caption under `field` (and optionally a key)."""

    def __init__(self, path: str, field: str = "caption", key_field: str | None = None, strict: bool = False):
        super().__init__(strict)
        self.path, self.field, self.key_field = Path(path), field, key_field

    def rows(self) -> Iterator[tuple[str | None, str | None, str]]:
        for number, line in _decoded_lines(self.path):
            where = f"{self.path}:{number}"
            if line is None or not line.strip():
                yield None, line, where
                continue
            try:
                record = json.loads(line)
                value = record[self.field]
                key = str(record[self.key_field]) if self.key_field else None
            except (json.JSONDecodeError, KeyError, TypeError):
                yield None, None, where
                continue
            yield key, value if isinstance(value, str) else None, where


class ParquetCaptions(CaptionSource):
    """A parquet column (needs the optional `pyarrow`: pip install 'stablerep_pl[parquet]')."""

    def __init__(
        self, path: str, column: str = "caption", key_column: str | None = None, strict: bool = False
    ):
        super().__init__(strict)
        self.path, self.column, self.key_column = Path(path), column, key_column

    def rows(self) -> Iterator[tuple[str | None, str | None, str]]:
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError("parquet captions need pyarrow: pip install 'stablerep_pl[parquet]'") from err
        columns = [self.column] + ([self.key_column] if self.key_column else [])
        table = pq.read_table(self.path, columns=columns).to_pydict()
        keys = table.get(self.key_column) if self.key_column else None
        for i, value in enumerate(table[self.column]):
            key = str(keys[i]) if keys is not None else None
            yield key, value if isinstance(value, str) else None, f"{self.path}[{i}]"


class TemplateCaptions(CaptionSource):
    """Class names × templates, e.g. "a photo of a {}." (names inline or one per line in a file)."""

    def __init__(
        self, class_names: Sequence[str] | None = None, class_file: str | None = None,
        templates: Sequence[str] = ("a photo of a {}.",), strict: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(strict)
        if (class_names is None) == (class_file is None):
            raise ValueError("give exactly one of class_names and class_file")
        if any("{}" not in t for t in templates):
            raise ValueError("every template needs a {} placeholder")
        self.class_names, self.class_file, self.templates = class_names, class_file, list(templates)

    def rows(self) -> Iterator[tuple[str | None, str | None, str]]:
        names = self.class_names
        if names is None:
            names = [line for _, line in _decoded_lines(Path(str(self.class_file))) if line is not None]
        for name in names:
            for template in self.templates:
                yield None, template.format(name.strip()) if name.strip() else "", f"class {name!r}"


def open_captions(path: str, strict: bool = False, column: str = "caption") -> CaptionSource:
    """A source chosen by file suffix: .txt, .csv/.tsv, .jsonl/.json, .parquet."""
    suffix = Path(path).suffix.lower()
    if suffix in {".csv", ".tsv", ".tab"}:
        return CsvCaptions(path, column=column, strict=strict)
    if suffix in {".jsonl", ".json", ".ndjson"}:
        return JsonlCaptions(path, field=column, strict=strict)
    if suffix == ".parquet":
        return ParquetCaptions(path, column=column, strict=strict)
    return TextCaptions(path, strict=strict)
