"""`stablerep render` → shards: round trip, resume after a kill, rank splitting, settings guard."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.cli import main as cli_main
from stablerep_pl.generation import ImageRequest
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

ROOT = Path(__file__).resolve().parents[2]


def captions(n: int, seed: int = 0) -> list[Caption]:
    return [Caption(caption_key(t), t) for t in procedural_captions(n, seed=seed)]


def read_shards(folder: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of every complete shard, read with the standard library's tarfile."""
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def test_round_trip_with_provenance(tmp_path: Path) -> None:
    gen = ProceduralGenerator(size=24, seed=3)
    caps = captions(7)
    report = render_shards(
        gen, caps, tmp_path, images_per_caption=3, shard_size=3, image_format="png", progress=False
    )
    assert (report.shards_total, report.captions_written, report.images_written) == (3, 7, 21)
    samples = read_shards(tmp_path)
    assert set(samples) == {c.key for c in caps}
    caption = caps[4]
    sample = samples[caption.key]
    assert sample["txt"].decode() == caption.text
    meta = json.loads(sample["json"])
    assert meta["seeds"] == [gen.seed_for(caption.key, j) for j in range(3)]
    assert meta["size"] == 24 and meta["base_seed"] == 3 and "package_version" in meta
    # Any single image is regenerated alone from its recorded address (png is lossless).
    [again] = ProceduralGenerator(size=24, seed=meta["base_seed"]).render(
        [ImageRequest(caption.text, caption.key, 2)]
    )
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(sample["2.png"]))), np.asarray(again))
    info = json.loads((tmp_path / "_info.json").read_text())
    assert info["num_images"] == 21 and len(info["shards"]) == 3


def test_ranks_write_disjoint_shards_and_info_waits_for_all(tmp_path: Path) -> None:
    gen, caps = ProceduralGenerator(size=16), captions(10)
    first = render_shards(
        gen, caps, tmp_path, images_per_caption=2, shard_size=2, rank=1, world_size=2, progress=False
    )
    assert first.shards_written == 2 and not (tmp_path / "_info.json").exists()
    render_shards(
        gen, caps, tmp_path, images_per_caption=2, shard_size=2, rank=0, world_size=2, progress=False
    )
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [f"shard-{i:06d}.tar" for i in range(5)]
    assert sorted(read_shards(tmp_path)) == sorted(c.key for c in caps)
    assert json.loads((tmp_path / "_info.json").read_text())["num_captions"] == 10


def test_rerun_keeps_complete_shards_and_redoes_partial_ones(tmp_path: Path) -> None:
    gen, caps = ProceduralGenerator(size=16), captions(6)
    render_shards(gen, caps, tmp_path, images_per_caption=2, shard_size=2, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")}
    os.replace(tmp_path / "shard-000001.tar", tmp_path / "shard-000001.tar.tmp")  # as a crash leaves it
    (tmp_path / "shard-000001.tar.tmp").write_bytes(before["shard-000001.tar"][:700])
    report = render_shards(gen, caps, tmp_path, images_per_caption=2, shard_size=2, progress=False)
    assert (report.shards_written, report.shards_skipped) == (1, 2)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")} == before  # byte for byte
    assert not list(tmp_path.glob("*.tmp"))


def test_changed_settings_are_refused(tmp_path: Path) -> None:
    gen, caps = ProceduralGenerator(size=16), captions(4)
    render_shards(gen, caps, tmp_path, images_per_caption=2, shard_size=2, progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        render_shards(gen, caps, tmp_path, images_per_caption=2, shard_size=3, progress=False)
    with pytest.raises(ValueError, match="generator"):
        render_shards(
            ProceduralGenerator(size=16, seed=9), caps, tmp_path, images_per_caption=2, shard_size=2
        )


def test_killed_render_is_completed_by_a_rerun(tmp_path: Path) -> None:
    caption_file = tmp_path / "captions.txt"
    caption_file.write_text("\n".join(procedural_captions(240, seed=1)) + "\n")
    out = tmp_path / "shards"
    command = [
        sys.executable, "-m", "stablerep_pl.cli", "render", "--config", str(ROOT / "configs/render/procedural.yaml"),
        "--captions", str(caption_file), "--output", str(out), "--shard_size", "20",
        "--images_per_caption", "4", "--generator.init_args.size", "96", "--progress", "false",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.tar"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list(out.glob("*.tar")))
    assert 2 <= done_before < 12, "the kill should land mid-render"
    cli_main(command[3:])  # the rerun in-process: only the kill needs a real process
    samples = read_shards(out)
    assert len(list(out.glob("*.tar"))) == 12 and not list(out.glob("*.tmp"))
    assert sorted(samples) == sorted(caption_key(t) for t in procedural_captions(240, seed=1))
    assert all(len([k for k in s if k.endswith(".jpg")]) == 4 for s in samples.values())
