"""CaptionGrid on short quickstart fits: the TensorBoard image and text read back from the event file
against the batches the model trained on, and a run bit-identical with and without the callback."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stablerep_pl.augment.transforms import IMAGENET_MEAN, IMAGENET_STD
from stablerep_pl.callbacks import CaptionGrid
from stablerep_pl.callbacks.caption_grid import GAP, PAD
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.cli import StableRepCLI
from stablerep_pl.generation import ImageRequest
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

ROOT = Path(__file__).resolve().parents[2]
TAG = "train/caption_grid"
ROWS, POOL, EVERY, STEPS, TEXT = 3, 2, 2, 5, 200
TILE = 64  # the quickstart's 32 px views, enlarged 2× (min_tile 64)


class Recorder(L.Callback):
    """The batch each step trains on (a copy), and the global RNG states at this point of the hook."""

    def __init__(self) -> None:
        self.batches: dict[int, dict[str, Any]] = {}
        self.rng: dict[int, tuple[Any, ...]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        self.batches[step] = {"images": batch["images"].clone(), "caption": list(batch["caption"])}
        self.rng[step] = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())


def quickstart_config(tmp_path: Path, grid: bool) -> Path:
    """The quickstart config at test size: its CaptionGrid entry logging every 2 steps, no probes."""
    config = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    [entry] = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("CaptionGrid")]
    assert entry["init_args"] == {"every_n_steps": 100, "max_captions": 4}  # as the quickstart enables it
    entry["init_args"] = {"every_n_steps": EVERY, "max_captions": ROWS, "pool_images": POOL}
    config["trainer"]["callbacks"] = [
        c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("TorchThreads")
    ]
    config["trainer"]["callbacks"] += [entry] if grid else []
    path = tmp_path / f"quickstart_{grid}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(tmp_path: Path, grid: bool, *extra: str) -> tuple[StableRepCLI, Recorder, Recorder]:
    cli = StableRepCLI(
        args=[
            "--config", str(quickstart_config(tmp_path, grid)), *extra,
            "--data.init_args.batch_size=8", "--data.init_args.num_workers=0", f"--trainer.max_steps={STEPS}",
            "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        run=False,
    )  # fmt: skip
    before, after = Recorder(), Recorder()
    callbacks = cli.trainer.callbacks
    at = next((i for i, c in enumerate(callbacks) if isinstance(c, CaptionGrid)), len(callbacks))
    callbacks[at:at] = [before]
    callbacks.insert(at + 2 if grid else at + 1, after)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == STEPS
    return cli, before, after


def expected_levels(view: torch.Tensor) -> np.ndarray:
    """Un-normalised `[H, W, 3]` of a normalised `[3, H, W]` view in 0-255, float64 (independent of the callback)."""
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    return np.clip(view.permute(1, 2, 0).double().numpy() * std + mean, 0, 1) * 255


def assert_shows(shown: np.ndarray, view: torch.Tensor) -> None:
    """`shown` is the view rounded to uint8: exactly, except where the level lies within float32
    rounding of a half (the callback computes in float32: 149.4999984 may show as 150)."""
    # within half a level (+1e-4): the nearest integer, or either one for a level that close to a half
    assert (np.abs(shown.astype(int) - expected_levels(view)) <= 0.5 + 1e-4).all()


def read_events(log_dir: str) -> tuple[list[Any], list[Any]]:
    events = EventAccumulator(log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    return events.Images(TAG), events.Tensors(f"{TAG}_captions/text_summary")


def tile(grid: np.ndarray, row: int, column: int, views: int) -> np.ndarray:
    y = row * (TILE + PAD)
    x = TEXT + PAD + column * (TILE + PAD) + (GAP if column >= views else 0)
    return grid[y : y + TILE, x : x + TILE][::2, ::2]  # one pixel of each 2×2 block


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    on = fit(tmp_path_factory.mktemp("grid_on"), True, "--data.init_args.num_captions=64")
    off = fit(tmp_path_factory.mktemp("grid_off"), False, "--data.init_args.num_captions=64")
    return {"on": on, "off": off}


def test_grid_shows_the_trained_views_and_the_generated_pool(runs: dict[str, Any]) -> None:
    cli, recorded, _ = runs["on"]
    images, texts = read_events(cli.trainer.logger.log_dir)
    assert [e.step for e in images] == [0, 2, 4] and [e.step for e in texts] == [0, 2, 4]
    views = 4  # the quickstart's m
    generator = ProceduralGenerator(size=32, diversity=0.0, seed=0)  # the quickstart's generator
    for event, text in zip(images, texts):
        batch = recorded.batches[event.step]
        grid = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        assert (event.height, event.width) == grid.shape[:2]
        assert grid.shape[:2] == (ROWS * (TILE + PAD) - PAD, TEXT + (views + POOL) * (TILE + PAD) + GAP)
        for r in range(ROWS):
            for c in range(views):
                assert_shows(tile(grid, r, c, views), batch["images"][r, c])
            caption = batch["caption"][r]
            for j in range(POOL):
                [image] = generator.render([ImageRequest(caption, caption_key(caption), j)])
                assert np.array_equal(tile(grid, r, views + j, views), np.asarray(image))
        lines = text.tensor_proto.string_val[0].decode().splitlines()
        assert lines[0].startswith("Columns: caption | 4 augmented views")
        assert [line.split(". ", 1)[1] for line in lines[2:]] == batch["caption"][:ROWS]


def test_callback_leaves_the_rng_and_the_training_run_alone(runs: dict[str, Any]) -> None:
    cli, before, after = runs["on"]
    for step in (0, 2, 4):  # a logging step: same global RNG states before and after the callback
        torch_a, numpy_a, python_a = before.rng[step]
        torch_b, numpy_b, python_b = after.rng[step]
        assert torch.equal(torch_a, torch_b) and np.array_equal(numpy_a, numpy_b) and python_a == python_b
    plain, _, _ = runs["off"]
    for (name, a), (_, b) in zip(cli.model.state_dict().items(), plain.model.state_dict().items()):
        assert torch.equal(a, b), name
    batches = runs["off"][1].batches
    assert all(torch.equal(before.batches[s]["images"], batches[s]["images"]) for s in batches)


def test_pool_is_read_back_from_shards(tmp_path: Path) -> None:
    captions = [Caption(caption_key(t), t) for t in procedural_captions(48, seed=4)]
    generator = ProceduralGenerator(size=32, seed=6)
    render_shards(generator, captions, tmp_path / "shards", 4, 8, image_format="png", progress=False)
    cli, recorded, _ = fit(
        tmp_path, True, "--config", str(ROOT / "configs/data/shards.yaml"),
        f"--data.init_args.urls={tmp_path}/shards/shard-{{000000..000005}}.tar",
    )  # fmt: skip
    assert cli.datamodule.record_sources  # the callback asked for sample sources
    images, _ = read_events(cli.trainer.logger.log_dir)
    for event in images:
        grid = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        batch = recorded.batches[event.step]
        for r in range(ROWS):
            caption = batch["caption"][r]
            assert_shows(tile(grid, r, 0, 4), batch["images"][r, 0])
            for j in range(POOL):
                [image] = generator.render([ImageRequest(caption, caption_key(caption), j)])
                assert np.array_equal(tile(grid, r, 4 + j, 4), np.asarray(image))
