"""Sweeps with the procedural generator: guidance maps onto diversity, folders and settings, and
`stablerep render --diversities` killed mid-sweep and re-run."""

from __future__ import annotations

import io
import itertools
import json
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
from stablerep_pl.generation.procedural import ProceduralGenerator, diversity_for_guidance
from stablerep_pl.generation.sweep import render_sweep, setting_folder, sweep_settings

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = [Caption(caption_key(t), t) for t in procedural_captions(5, seed=2)]
RENDER = dict(images_per_caption=3, shard_size=2, image_format="png", progress=False)


def images(folder: Path) -> dict[tuple[str, int], np.ndarray]:
    found = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                if ext.endswith(".png"):
                    data = tar.extractfile(member).read()
                    found[key, int(ext.split(".")[0])] = np.asarray(Image.open(io.BytesIO(data)), np.int16)
    return found


def test_guidance_maps_onto_diversity() -> None:
    assert [diversity_for_guidance(g) for g in (0, 0.5, 1, 1.5, 2, 4, 8)] == [
        1,
        1,
        1,
        1 / 1.5,
        0.5,
        0.25,
        0.125,
    ]
    with pytest.raises(ValueError, match="guidance_scale"):
        diversity_for_guidance(-1)
    gen = ProceduralGenerator(diversity=0.1)
    assert gen.with_settings(guidance_scale=2).diversity == 0.5 and gen.diversity == 0.1
    with pytest.raises(ValueError, match="not both"):
        gen.with_settings(guidance_scale=2, diversity=0.3)
    with pytest.raises(ValueError, match=r"diversity must be in \[0, 1\]"):
        gen.with_settings(diversity=1.5)
    with pytest.raises(ValueError, match="cannot override size"):
        gen.with_settings(size=32)


@pytest.mark.parametrize(
    ("axis", "values", "diversity"),
    [("guidance_scale", [1.5, 2.0, 8.0], lambda g: 1 / g), ("diversity", [0.0, 0.5, 1.0], lambda d: d)],
)
def test_procedural_sweep_equals_generators_with_the_mapped_diversity(
    tmp_path: Path, axis: str, values: list[float], diversity
) -> None:
    gen = ProceduralGenerator(size=24, seed=4)
    reports = render_sweep(gen, CAPTIONS, tmp_path, [{axis: v} for v in values], **RENDER)
    label = {"guidance_scale": "guidance", "diversity": "diversity"}[axis]
    assert sorted(reports) == sorted(f"{label}_{v:g}" for v in values)
    swept = {v: images(tmp_path / f"{label}_{v:g}") for v in values}
    for v in values:
        alone = ProceduralGenerator(size=24, seed=4, diversity=diversity(v))
        for (key, j), pixels in swept[v].items():
            caption = next(c.text for c in CAPTIONS if c.key == key)
            assert np.array_equal(pixels, np.asarray(alone.render([ImageRequest(caption, key, j)])[0]))
        manifest = json.loads((tmp_path / f"{label}_{v:g}" / "_render.json").read_text())["generator"]
        assert manifest["sweep"] == {axis: v} and manifest["diversity"] == pytest.approx(diversity(v))
    for a, b in itertools.pairwise(values):  # the same seeds, another diversity: the images differ
        assert all(not np.array_equal(swept[a][name], swept[b][name]) for name in swept[a])


def test_settings_grid_and_folder_names() -> None:
    grid = sweep_settings(guidance_scales=[2, 8], steps_list=[20, 50], schedulers=["DDIMScheduler"])
    assert grid == [
        {"guidance_scale": 2.0, "num_inference_steps": 20, "scheduler": "DDIMScheduler"},
        {"guidance_scale": 2.0, "num_inference_steps": 50, "scheduler": "DDIMScheduler"},
        {"guidance_scale": 8.0, "num_inference_steps": 20, "scheduler": "DDIMScheduler"},
        {"guidance_scale": 8.0, "num_inference_steps": 50, "scheduler": "DDIMScheduler"},
    ]
    assert setting_folder(grid[0]) == "guidance_2-steps_20-scheduler_DDIMScheduler"
    assert [setting_folder({"guidance_scale": g}) for g in (1.5, 2.0, 0.1 + 0.2)] == [
        "guidance_1.5", "guidance_2", "guidance_0.30000000000000004",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="repeats"):
        sweep_settings(guidance_scales=[2, 2.0])
    with pytest.raises(ValueError, match="no values"):
        sweep_settings(diversities=[])
    with pytest.raises(ValueError, match="cannot override num_inference_steps"):
        render_sweep(ProceduralGenerator(size=16), CAPTIONS, "/nonexistent", sweep_settings(steps_list=[2]))


def test_each_folder_keeps_its_own_settings_guard(tmp_path: Path) -> None:
    gen = ProceduralGenerator(size=16)
    render_sweep(gen, CAPTIONS, tmp_path, [{"diversity": 0.0}, {"diversity": 1.0}], **RENDER)
    first = {p: p.read_bytes() for p in tmp_path.glob("*/*.tar")}
    reports = render_sweep(gen, CAPTIONS, tmp_path, [{"diversity": d} for d in (0.0, 0.5, 1.0)], **RENDER)
    assert {f: r.shards_written for f, r in reports.items()} == {
        "diversity_0": 0,
        "diversity_0.5": 3,
        "diversity_1": 0,
    }
    assert all(p.read_bytes() == b for p, b in first.items())
    with pytest.raises(ValueError, match="images_per_caption"):  # another k into the same folders
        render_sweep(gen, CAPTIONS, tmp_path, [{"diversity": 0.0}], **{**RENDER, "images_per_caption": 2})


def read_all(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*.tar"))}


@pytest.mark.slow
def test_killed_sweep_is_completed_by_a_rerun_byte_identical(tmp_path: Path) -> None:
    caption_file = tmp_path / "captions.txt"
    caption_file.write_text("\n".join(procedural_captions(120, seed=1)) + "\n")

    def command(out: Path) -> list[str]:
        return [
            sys.executable, "-m", "stablerep_pl.cli", "render",
            "--config", str(ROOT / "configs/render/procedural_diversity_sweep.yaml"),
            "--captions", str(caption_file), "--output", str(out), "--shard_size", "20",
            "--images_per_caption", "3", "--generator.init_args.size", "64", "--progress", "false",
            "--diversities", "[0.0, 0.5, 1.0]",
        ]  # fmt: skip

    cli_main(command(tmp_path / "reference")[3:])  # in-process: only the kill needs a real process
    out = tmp_path / "killed"
    process = subprocess.Popen(command(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*/*.tar"))) < 4:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(out.glob("*/*.tar")))
    assert 4 <= done < 18, "the kill should land mid-sweep"
    assert list(out.glob("*/*.tar.tmp")), "a killed sweep leaves partial shards"
    cli_main(command(out)[3:])
    assert not list(out.glob("*/*.tmp"))
    assert read_all(out) == read_all(tmp_path / "reference") and len(read_all(out)) == 3 * 6
