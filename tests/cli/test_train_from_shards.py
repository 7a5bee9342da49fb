"""Render → shards → train: the quickstart model trains from procedural and diffusion shards."""

from pathlib import Path

import pytest

from fixtures.tiny_sd import build_tiny_sd_pipeline
from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.cli import StableRepCLI
from stablerep_pl.generation.diffusion import DiffusionGenerator
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

ROOT = Path(__file__).resolve().parents[2]


def generators() -> dict:
    return {
        "procedural": lambda: ProceduralGenerator(size=32),
        "tiny_diffusion": lambda: DiffusionGenerator.from_pipeline(
            build_tiny_sd_pipeline(), num_inference_steps=2, output_size=32, device="cpu", batch_size=16
        ),
    }


@pytest.mark.parametrize("name", ["procedural", "tiny_diffusion"])
def test_quickstart_model_trains_from_rendered_shards(tmp_path: Path, name: str) -> None:
    captions = [Caption(caption_key(t), t) for t in procedural_captions(32, seed=4)]
    render_shards(generators()[name](), captions, tmp_path / "shards", images_per_caption=4, shard_size=8,
                  progress=False)  # fmt: skip
    cli = StableRepCLI(
        args=[
            "fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--config", str(ROOT / "configs/data/shards.yaml"),
            f"--data.init_args.urls={tmp_path}/shards/shard-{{000000..000003}}.tar",
            "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
            "--trainer.max_steps=3", "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )  # fmt: skip
    assert cli.trainer.global_step == 3
    assert type(cli.datamodule).__name__ == "ShardDataModule"
    assert len(cli.trainer.train_dataloader) == 32 // 8  # epoch length from _info.json


@pytest.mark.parametrize("source", ["on_the_fly", "shards"])
def test_stablerep_plus_trains_from_generator_and_shards(tmp_path: Path, source: str) -> None:
    extra = []
    if source == "shards":
        captions = [Caption(caption_key(t), t) for t in procedural_captions(32, seed=4)]
        render_shards(ProceduralGenerator(size=32), captions, tmp_path / "shards", 4, 8, progress=False)
        extra = [
            "--config", str(ROOT / "configs/data/shards.yaml"), "--data.init_args.text_tokens=77",
            f"--data.init_args.urls={tmp_path}/shards/shard-{{000000..000003}}.tar",
        ]  # fmt: skip
    cli = StableRepCLI(
        args=[
            "fit", "--config", str(ROOT / "configs/quickstart.yaml"),
            "--config", str(ROOT / "configs/stablerep_plus/quickstart.yaml"), *extra,
            "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
            "--trainer.fast_dev_run=2", f"--trainer.default_root_dir={tmp_path}",
        ]
    )  # fmt: skip
    assert type(cli.model).__name__ == "StableRepPlus" and cli.trainer.global_step == 2
    assert float(cli.trainer.callback_metrics["train/image_text_loss"]) > 0


def test_on_device_augmentation_feeds_the_model_float_views(tmp_path: Path) -> None:
    """`augmentation_mode: on_device`: uint8 crops leave the loader, the model sees augmented floats."""
    import lightning as L
    import torch

    seen: list[torch.Tensor] = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(batch["images"])

    captions = [Caption(caption_key(t), t) for t in procedural_captions(32, seed=4)]
    render_shards(ProceduralGenerator(size=32), captions, tmp_path / "shards", 4, 8, progress=False)
    cli = StableRepCLI(
        args=[
            "--config", str(ROOT / "configs/quickstart.yaml"), "--config", str(ROOT / "configs/data/shards.yaml"),
            f"--data.init_args.urls={tmp_path}/shards/shard-{{000000..000003}}.tar",
            "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
            "--data.init_args.augmentation_mode=on_device", "--trainer.max_steps=2",
            f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        run=False,
    )  # fmt: skip
    cli.trainer.callbacks.append(Spy())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2 and len(seen) == 2
    assert all(b.dtype == torch.float32 and b.shape[:2] == (8, 4) for b in seen)
    assert not torch.equal(seen[0][:, 0], seen[0][:, 1])  # views of one caption differ
