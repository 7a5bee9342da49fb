"""What can be known about shards before training: their URLs, which exist, and how many captions each holds.

Local shards are checked and counted up front (from `_info.json` beside them, or their tar headers),
so a typo fails before the first step and one pass has an exact length; remote ones cannot be.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import braceexpand

REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # pipe:, http://, s3://, gs:// …


def expand_urls(urls: str | list[str]) -> list[str]:
    """Brace patterns (`shard-{000000..000099}.tar`) and lists; any URL webdataset opens (`pipe:` …)."""
    items = [urls] if isinstance(urls, str) else list(urls)
    expanded = [u for item in items for u in braceexpand.braceexpand(item)]
    if not expanded:
        raise ValueError("no shard URLs given")
    return expanded


def is_local(url: str) -> bool:
    return not REMOTE.match(url) or url.startswith("file:")


def local_path(url: str) -> Path:
    return Path(url.removeprefix("file:"))


def check_local_urls(urls: list[str]) -> None:
    """Fail before training when local shard paths do not exist (a typo would otherwise spin forever)."""
    missing = [u for u in urls if is_local(u) and not local_path(u).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shard URLs match no file: {shown}")


def count_samples(path: Path) -> int:
    """Samples in a local tar from its headers alone (tarfile seeks over the data); a corrupt or
    truncated tail ends the count."""
    keys, previous = 0, None
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key = member.name.split(".", 1)[0] if member.isreg() else None
                if key is not None and key != previous:
                    keys, previous = keys + 1, key
    except (tarfile.TarError, OSError, EOFError):
        pass
    return keys


def read_sample_files(url: str, key: str) -> dict[str, bytes]:
    """The files of sample `key` in a local tar shard, by extension (`0.jpg`, `txt`, …).

    Walks the member headers up to the end of the sample (tarfile seeks over other members' data),
    so a lookup costs a fraction of one pass over the shard's headers, not over its bytes.
    """
    found: dict[str, bytes] = {}
    with tarfile.open(local_path(url)) as tar:
        for member in tar:
            name, _, extension = member.name.partition(".")
            if name == key and member.isreg():
                found[extension] = tar.extractfile(member).read()  # type: ignore[union-attr]
            elif found:
                break
    return found


def read_shard_infos(urls: list[str]) -> dict[str, Any] | None:
    """Per-shard caption counts (and images per caption, when known) of local shards.

    From `_info.json` beside the shards (`shard_captions`, or for shards rendered before that
    existed, `_render.json`'s shard size); shards without one are counted from their tar headers.
    None when any shard is remote (nothing can be read before training).
    """
    if not all(is_local(u) for u in urls):
        return None
    counts: dict[str, int] = {}
    images: set[int] = set()
    for folder in sorted({local_path(u).parent for u in urls}):
        info_path = folder / "_info.json"
        if not info_path.is_file():
            continue
        info = json.loads(info_path.read_text())
        images.add(int(info["images_per_caption"]))
        per_shard = info.get("shard_captions")
        if per_shard is None:
            settings = json.loads((folder / "_render.json").read_text())
            size, total = int(settings["shard_size"]), int(info["num_captions"])
            per_shard = {name: min(size, total - i * size) for i, name in enumerate(sorted(info["shards"]))}
        counts.update({str(folder / name): int(n) for name, n in per_shard.items()})
    known = [counts.get(str(local_path(u))) for u in urls]
    per_url = [count_samples(local_path(u)) if c is None else c for u, c in zip(urls, known)]
    return {"counts": per_url, "images_per_caption": min(images) if images else None}
