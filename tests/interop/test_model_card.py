"""`stablerep export` writes a Hugging Face-style model card with the run's real facts.

A quickstart run cut to 4 steps (logger on, so LightningCLI writes `config.yaml` beside the logs; a
small online probe, so the checkpoint holds a probe result), exported; the card's YAML front matter is
parsed and compared with the checkpoint, the config and a `stablerep probe` run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from stablerep_pl.cli import StableRepCLI, main
from stablerep_pl.cli.probe import main as probe_main

ROOT = Path(__file__).resolve().parents[2]
EVAL_SET = {
    "class_path": "stablerep_pl.evaluation.eval_sets.ProceduralEvalSet",
    "init_args": {"image_size": 32, "render_size": 32, "train_per_class": 8, "test_per_class": 4, "diversity": 0.0},
}  # fmt: skip


def front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("card")
    callbacks = {"trainer": {"callbacks": [
        {"class_path": "stablerep_pl.callbacks.LinearProbeCallback",
         "init_args": {"eval_set": EVAL_SET, "steps": 20, "lrs": [0.01]}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
    ]}}  # fmt: skip
    (tmp / "small.yaml").write_text(yaml.safe_dump(callbacks))
    StableRepCLI(
        args=[
            "fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--config", str(tmp / "small.yaml"),
            "--data.init_args.num_captions=64", "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
            "--data.init_args.val_captions=8", "--trainer.max_steps=4", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp}", f"--trainer.logger.init_args.save_dir={tmp / 'runs'}",
        ]
    )  # fmt: skip
    return next((tmp / "runs").rglob("last.ckpt"))


def test_card_front_matter_holds_the_runs_facts(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "export" / "backbone.safetensors"
    main(["export", str(run), "--out", str(out)])
    card = out.parent / "README.md"
    assert f"model card: {card}" in capsys.readouterr().out
    matter = front_matter(card)
    ckpt = torch.load(run, weights_only=True)
    facts = matter["stablerep"]
    assert matter["library_name"] == "timm" and matter["license"] == "apache-2.0" and "timm" in matter["tags"]
    assert facts["timm_name"] == "resnet10t" and facts["method"] == "StableRep"
    assert facts["steps"] == ckpt["global_step"] == 4
    assert facts["global_batch_images"] == 8 * 4  # captions per step × views (one rank)
    assert facts["config_file"] == str(run.parent.parent / "config.yaml")
    assert facts["training_config"]["model"]["temperature"] == 0.1
    generator = facts["data"]["generator"]
    assert generator["class_path"] == "stablerep_pl.generation.procedural.ProceduralGenerator"
    assert generator["size"] == 32 and facts["data"]["images_per_caption"] == 10
    assert facts["data"]["captions"]["num_captions"] == 64
    online = ckpt["callbacks"]["LinearProbeCallback"]["last_result"]["top1"]
    [result] = matter["model-index"][0]["results"]
    assert result["task"]["name"] == "online linear probe"
    assert result["dataset"]["name"] == "ProceduralEvalSet"
    assert result["metrics"][0]["value"] == round(100 * online, 2)
    text = card.read_text()
    assert "pretrained_cfg_overlay=dict(file='backbone.safetensors')" in text and "'resnet10t'" in text


def test_card_lists_the_latest_offline_probe(run: Path, tmp_path: Path) -> None:
    """`stablerep probe` results under runs/probe/ are found by the checkpoint they name."""
    probe_out = run.parents[3] / "probe" / "last-procedural"
    report = probe_main([
        "--ckpt", str(run), "--out", str(probe_out), f"--data={json.dumps(EVAL_SET)}", "--protocol.epochs=1",
        "--protocol.cache_features=true", "--protocol.num_workers=0", "--protocol.few_shot_episodes=0",
        "--protocol.online_estimator=false", "--device=cpu",
    ])  # fmt: skip
    out = tmp_path / "backbone.safetensors"
    main(["export", str(run), "--out", str(out)])
    results = front_matter(tmp_path / "README.md")["model-index"][0]["results"]
    names = [r["task"]["name"] for r in results]
    assert names == ["linear (stablerep probe)", "knn (stablerep probe)", "online linear probe"]
    linear = report["results"]["trained"]["linear"]["top1"]
    assert results[0]["metrics"][0]["value"] == round(100 * linear, 2)


def test_a_foreign_readme_is_not_overwritten(run: Path, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("my notes\n")
    main(["export", str(run), "--out", str(tmp_path / "backbone.safetensors")])
    assert (tmp_path / "README.md").read_text() == "my notes\n"
    assert front_matter(tmp_path / "backbone.README.md")["stablerep"]["timm_name"] == "resnet10t"
