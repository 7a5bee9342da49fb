"""Guidance sweeps on the tiny random-weight SD pipeline: one prompt encoding per batch, the same seeds
for every value, images equal to a generator configured with that value, resumable per value."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.tiny_sd import build_tiny_sd_pipeline
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.generation.diffusion import DiffusionGenerator
from stablerep_pl.generation.render import render_shards
from stablerep_pl.generation.sweep import render_sweep

SETTINGS: dict[str, Any] = dict(num_inference_steps=2, output_size=None, device="cpu", seed=3, batch_size=4)
RENDER: dict[str, Any] = dict(images_per_caption=2, shard_size=3, image_format="png", progress=False)
CAPTIONS = [Caption(caption_key(t), t) for t in procedural_captions(5, seed=11)]  # shards of 3 and 2
BATCHES = (
    2 + 1
)  # pipeline calls: shard 0 in groups of 2 + 1 captions (batch_size 4 // 2 images), shard 1 in one
GUIDANCE = [1.0, 2.0, 4.0]  # 1.0: classifier-free guidance off (no unconditional branch)


@pytest.fixture(scope="module")
def pipe() -> Any:
    return build_tiny_sd_pipeline()


def generator(pipe: Any, **overrides: Any) -> DiffusionGenerator:
    return DiffusionGenerator.from_pipeline(pipe, **{**SETTINGS, **overrides})


def images(folder: Path) -> dict[str, bytes]:
    """`key/index` → PNG bytes of every image in the folder's complete shards."""
    found = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                if ext.endswith(".png"):
                    found[f"{key}/{ext.split('.')[0]}"] = tar.extractfile(member).read()
    return found


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), np.int16)


@pytest.fixture(scope="module")
def sweep(pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    render_sweep(generator(pipe), CAPTIONS, out, [{"guidance_scale": g} for g in GUIDANCE], **RENDER)
    return out


def test_values_differ_and_each_equals_a_generator_configured_with_it(
    pipe: Any, sweep: Path, tmp_path: Path
) -> None:
    swept = {g: images(sweep / f"guidance_{g:g}") for g in GUIDANCE}
    assert all(len(s) == 5 * 2 for s in swept.values())
    stacks = {g: np.stack([decoded(swept[g][name]) for name in sorted(swept[g])]) for g in GUIDANCE}
    for g, h in [(1.0, 2.0), (2.0, 4.0)]:  # every image changes with the guidance …
        assert all(np.abs(x - y).mean() > 0.3 for x, y in zip(stacks[g], stacks[h]))
    # … by an amount that grows with the guidance gap (w·(cond − uncond) is linear in w), and stays
    # far below the ~42 levels between two seeds: the same seeds, only the guidance differs
    small, large = np.abs(stacks[1.0] - stacks[2.0]).mean(), np.abs(stacks[1.0] - stacks[4.0]).mean()
    assert 2 * small < large < 10
    for g in GUIDANCE:  # the same images, PNG byte for byte, as a render with only that value
        render_shards(generator(pipe, guidance_scale=g), CAPTIONS, tmp_path / f"alone_{g:g}", **RENDER)
        assert images(tmp_path / f"alone_{g:g}") == swept[g]


@pytest.mark.parametrize("g", [1.0, 4.0])
def test_first_batch_equals_the_plain_diffusers_call(pipe: Any, sweep: Path, g: float) -> None:
    """Independent reference: the pipeline called with prompt strings and freshly seeded generators."""
    gen = generator(pipe)
    group = CAPTIONS[:2]  # the first call: batch_size 4 // 2 images = 2 captions
    seeds = [gen.seed_for(c.key, j) for c in group for j in range(2)]
    reference = pipe(
        prompt=[c.text for c in group for _ in range(2)], num_inference_steps=2, guidance_scale=g,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], output_type="pil",
    ).images  # fmt: skip
    swept = images(sweep / f"guidance_{g:g}")
    got = [decoded(swept[f"{c.key}/{j}"]) for c in group for j in range(2)]
    assert all(np.array_equal(x, np.asarray(r, np.int16)) for x, r in zip(got, reference))


def test_prompts_are_encoded_once_per_batch_not_once_per_value(pipe: Any, tmp_path: Path) -> None:
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    handle = pipe.text_encoder.register_forward_hook(count)
    try:
        check_encoder_calls(pipe, calls, tmp_path)
    finally:
        handle.remove()


def check_encoder_calls(pipe: Any, calls: list[int], tmp_path: Path) -> None:
    gen = generator(pipe)
    render_sweep(gen, CAPTIONS, tmp_path / "guided", [{"guidance_scale": g} for g in GUIDANCE], **RENDER)
    assert calls[0] == 2 * BATCHES  # the prompts and the unconditional "" once, for all three values
    calls[0] = 0
    render_sweep(gen, CAPTIONS, tmp_path / "unguided", [{"guidance_scale": g} for g in (0.5, 1.0)], **RENDER)
    assert calls[0] == BATCHES  # no value above 1: no unconditional branch at all
    calls[0] = 0
    for g in GUIDANCE:  # the baseline the sweep saves: separate renders encode per value
        render_shards(generator(pipe, guidance_scale=g), CAPTIONS, tmp_path / f"alone_{g:g}", **RENDER)
    assert calls[0] == (1 + 2 + 2) * BATCHES


def test_provenance_records_the_guidance(sweep: Path) -> None:
    for g in GUIDANCE:
        folder = sweep / f"guidance_{g:g}"
        manifest = json.loads((folder / "_render.json").read_text())["generator"]
        info = json.loads((folder / "_info.json").read_text())
        assert manifest["guidance_scale"] == g and manifest["sweep"] == {"guidance_scale": g}
        assert info["generator"] == manifest and info["num_images"] == 10
        with tarfile.open(folder / "shard-000000.tar") as tar:
            record = json.loads(tar.extractfile(f"{CAPTIONS[0].key}.json").read())
        assert record["guidance_scale"] == g and record["sweep"] == {"guidance_scale": g}
        assert record["seeds"] == [DiffusionGenerator(seed=3).seed_for(CAPTIONS[0].key, j) for j in range(2)]


def test_crash_state_is_completed_per_value_byte_identical(
    pipe: Any, sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(sweep, out)
    # What a crash (or an added value) leaves: guidance_1 lacks shard 1; guidance_2 holds a partial
    # shard 0 and lacks shard 1; guidance_4 is complete.
    (out / "guidance_1/shard-000001.tar").unlink()
    partial = out / "guidance_2/shard-000000.tar"
    partial.with_name(partial.name + ".tmp").write_bytes(partial.read_bytes()[:900])
    partial.unlink()
    (out / "guidance_2/shard-000001.tar").unlink()
    for info in out.glob("*/_info*.json"):
        info.unlink()
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*/*.tar")}
    calls: list[tuple[float, int]] = []
    original = DiffusionGenerator._call_pipeline

    def recording(self: DiffusionGenerator, pipe_: Any, requests: Any, embeddings: Any) -> Any:
        calls.append((self.guidance_scale, len(requests)))
        return original(self, pipe_, requests, embeddings)

    monkeypatch.setattr(DiffusionGenerator, "_call_pipeline", recording)
    settings = [{"guidance_scale": g} for g in GUIDANCE]
    reports = render_sweep(generator(pipe), CAPTIONS, out, settings, **RENDER)
    written = {folder: r.shards_written for folder, r in reports.items()}
    assert written == {"guidance_1": 1, "guidance_2": 2, "guidance_4": 0}
    # shard 0 (calls of 2 and 1 captions) for guidance 2 only; shard 1 (2 captions) for 1 and 2
    assert sorted(calls) == sorted([(2.0, 4), (2.0, 2), (1.0, 4), (2.0, 4)])
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == kept  # complete shards untouched
    assert not list(out.glob("*/*.tmp"))
    for g in GUIDANCE:
        folder = f"guidance_{g:g}"
        for shard in sorted((sweep / folder).glob("*.tar")):
            assert (out / folder / shard.name).read_bytes() == shard.read_bytes()  # byte for byte
        assert (out / folder / "_info.json").read_text() == (sweep / folder / "_info.json").read_text()


def test_scheduler_and_steps_sweep_equal_configured_generators(pipe: Any, tmp_path: Path) -> None:
    """Copies share one pipeline but each installs its own scheduler for its calls only."""
    settings = [{"num_inference_steps": 1}, {"scheduler": "EulerDiscreteScheduler"}]  # Euler runs last
    captions = CAPTIONS[:2]
    reports = render_sweep(generator(pipe), captions, tmp_path / "sweep", settings, **RENDER)
    assert sorted(reports) == ["scheduler_EulerDiscreteScheduler", "steps_1"]
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"  # the copies put the pipeline's own back
    alone = {  # Euler on its own pipeline: `scheduler` would replace the shared pipeline's for good
        "scheduler_EulerDiscreteScheduler": generator(
            build_tiny_sd_pipeline(), scheduler="EulerDiscreteScheduler"
        ),
        "steps_1": generator(pipe, num_inference_steps=1),
    }
    found = {}
    for folder, gen in alone.items():
        render_shards(gen, captions, tmp_path / folder, **RENDER)
        found[folder] = images(tmp_path / "sweep" / folder)
        assert found[folder] == images(tmp_path / folder)
    manifests = {
        f: json.loads((tmp_path / "sweep" / f / "_render.json").read_text())["generator"] for f in found
    }
    assert manifests["scheduler_EulerDiscreteScheduler"]["scheduler"] == "EulerDiscreteScheduler"
    assert (
        manifests["steps_1"]["num_inference_steps"] == 1
        and manifests["steps_1"]["scheduler"] == "DDIMScheduler"
    )
    base = images(tmp_path / "sweep" / "steps_1")  # and the settings change the images
    assert all(found["scheduler_EulerDiscreteScheduler"][k] != base[k] for k in base)


def test_a_copy_leaves_the_original_alone(pipe: Any) -> None:
    base = generator(pipe, guidance_scale=2.0)
    copy = base.with_settings(guidance_scale=8.0, scheduler="EulerDiscreteScheduler")
    assert copy.pipe is base.pipe and base.guidance_scale == 2.0
    assert base.provenance()["scheduler"] == "DDIMScheduler"
    assert copy.provenance()["scheduler"] == "EulerDiscreteScheduler"
    with pytest.raises(ValueError, match="cannot override height"):
        base.with_settings(height=64)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        base.with_settings(guidance_scale=-1.0)
