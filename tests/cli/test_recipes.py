"""Every paper recipe loads and trains one step on CPU at reduced size (backbone fragments too)."""

from pathlib import Path

import pytest

from stablerep_pl.captions.grammar import procedural_captions
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.captions.sources import Caption
from stablerep_pl.cli import StableRepCLI
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.generation.render import render_shards

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*/vitb16_*.yaml"))
RECIPES += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "baselines").glob("*.yaml"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("recipe_shards")
    captions = [Caption(caption_key(t), t) for t in procedural_captions(8, seed=1)]
    render_shards(
        ProceduralGenerator(size=32), captions, folder, images_per_caption=6, shard_size=8, progress=False
    )
    return str(folder / "shard-000000.tar")


def cpu_overrides(recipe: str, shards: str) -> list[str]:
    args = [
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
        "--trainer.sync_batchnorm=false", "--trainer.precision=32-true", "--trainer.max_steps=1",
        "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]",
        "--model.backbone.img_size=32", "--model.head_hidden_dim=64",
        f"--data.init_args.urls={shards}", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
        "--data.init_args.augmentation.image_size=32", "--data.init_args.epoch_captions=8",
    ]  # fmt: skip
    if "plus" in recipe or "clip" in recipe:
        args += [
            "--model.text_encoder.width=32",
            "--model.text_encoder.layers=1",
            "--model.text_encoder.heads=2",
        ]
    return args


def test_all_recipes_exist() -> None:
    names = {Path(r).name for r in RECIPES}
    assert {"vitb16_cc12m_1x.yaml", "vitb16_cc12m_2x.yaml", "vitb16_cc12m_3x.yaml", "vitb16_redcaps_1x.yaml",
            "vitb16_redcaps_3x.yaml", "simclr_vitb16_cc12m.yaml", "clip_vitb16_cc12m.yaml"} <= names  # fmt: skip
    assert len(RECIPES) == 8


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_one_step_on_cpu(recipe: str, shards: str, tmp_path: Path) -> None:
    cli = StableRepCLI(args=["fit", "--config", str(ROOT / recipe), *cpu_overrides(recipe, shards),
                             f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    assert cli.trainer.global_step == 1
    assert cli.model.backbone.name == "vit_base_patch16_224"
    assert cli.model.optim.base_lr == 1e-4 and cli.model.optim.betas == (0.9, 0.98)
    # The recipes run DDP with find_unused_parameters: false, which hangs or fails on a parameter
    # without a gradient: every trainable parameter must get one in a step.
    unused = [n for n, p in cli.model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused


@pytest.mark.slow
@pytest.mark.parametrize("fragment", ["resnet50", "vit_s16"])
def test_backbone_fragments_compose_with_a_recipe(fragment: str, shards: str, tmp_path: Path) -> None:
    recipe = "configs/stablerep/vitb16_cc12m_1x.yaml"
    cli = StableRepCLI(
        args=["fit", "--config", str(ROOT / recipe), "--config", str(ROOT / f"configs/backbones/{fragment}.yaml"),
              *cpu_overrides(recipe, shards), f"--trainer.default_root_dir={tmp_path}"]
    )  # fmt: skip
    expected = {"resnet50": "resnet50", "vit_s16": "vit_small_patch16_224"}[fragment]
    assert cli.model.backbone.name == expected and cli.trainer.global_step == 1
