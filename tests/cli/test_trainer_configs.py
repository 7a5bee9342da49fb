"""configs/trainer/{ddp,fsdp,fully_shard}.yaml compose with the recipes (`--print_config`), and the
FSDP strategy, which cannot run without CUDA, is instantiated from its config and checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import FSDPStrategy, Strategy

from stablerep_pl.cli import StableRepCLI

ROOT = Path(__file__).resolve().parents[2]
TRAINER = {
    name: str(ROOT / "configs" / "trainer" / f"{name}.yaml") for name in ("ddp", "fsdp", "fully_shard")
}
RECIPES = [
    str(ROOT / "configs" / "quickstart.yaml"),
    str(ROOT / "configs" / "stablerep" / "vitb16_cc12m_1x.yaml"),
]
STRATEGY = {
    "ddp": "lightning.pytorch.strategies.DDPStrategy",
    "fsdp": "lightning.pytorch.strategies.FSDPStrategy",
    "fully_shard": "stablerep_pl.distributed.FullyShardStrategy",
}


def print_config(capsys: pytest.CaptureFixture, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        StableRepCLI(args=["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: Path(p).stem)
@pytest.mark.parametrize("name", list(TRAINER))
def test_trainer_config_composes_with_a_recipe(capsys, recipe: str, name: str) -> None:
    config = print_config(capsys, "--config", recipe, "--config", TRAINER[name],
                          "--trainer.num_nodes=3", "--trainer.devices=8")  # fmt: skip
    trainer = config["trainer"]
    assert trainer["strategy"]["class_path"] == STRATEGY[name]
    assert trainer["sync_batchnorm"] is True
    assert (trainer["num_nodes"], str(trainer["devices"])) == (3, "8")  # left to the command line
    recipe_config = yaml.safe_load(Path(recipe).read_text())
    assert config["model"]["class_path"] == recipe_config["model"]["class_path"]  # the recipe is untouched
    assert trainer["precision"] == recipe_config["trainer"]["precision"]
    if name != "fsdp":  # GPU-only config: torch's own SyncBatchNorm
        assert [p["class_path"] for p in trainer["plugins"]] == [
            "stablerep_pl.distributed.SyncBatchNormAnyDevice"
        ]


def fsdp_strategy() -> FSDPStrategy:
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    section = yaml.safe_load(Path(TRAINER["fsdp"]).read_text())["trainer"]["strategy"]
    return parser.instantiate(parser.parse_object({"strategy": section})).strategy


def test_fsdp_config_wraps_blocks_in_bf16_with_sharded_checkpoints() -> None:
    import timm
    from timm.models.resnet import BasicBlock, Bottleneck
    from timm.models.vision_transformer import Block
    from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    strategy = fsdp_strategy()
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy._state_dict_type == "sharded"
    assert strategy.mixed_precision == MixedPrecision(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.float32
    )
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy)
    assert {Block, BasicBlock, Bottleneck, torch.nn.TransformerEncoderLayer} <= set(policy._module_classes)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=0)
    wrapped = [name for name, m in vit.named_modules() if policy(module=m, recurse=False, nonwrapped_numel=0)]
    assert wrapped == [f"blocks.{i}" for i in range(len(vit.blocks))]  # every block, nothing else


@pytest.mark.parametrize("recipe", ["stablerep/vitb16_cc12m_1x", "stablerep_plus/vitb16_cc12m_1x"])
def test_procedural_data_fragment_replaces_a_recipe_s_shards(capsys, recipe: str) -> None:
    """configs/data/procedural.yaml: the GPU smoke-test path keeps the recipe's batch and views."""
    path = str(ROOT / "configs" / f"{recipe}.yaml")
    config = print_config(
        capsys, "--config", path, "--config", str(ROOT / "configs" / "data" / "procedural.yaml")
    )
    data, recipe_data = config["data"], yaml.safe_load(Path(path).read_text())["data"]["init_args"]
    assert data["class_path"] == "stablerep_pl.data.on_the_fly.GeneratorDataModule"
    for key in ("views", "batch_size", "text_tokens"):
        assert data["init_args"][key] == recipe_data[key]
    assert data["init_args"]["augmentation"]["image_size"] == 224
