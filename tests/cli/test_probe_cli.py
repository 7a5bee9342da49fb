"""`stablerep probe` on a checkpoint of a (shortened) quickstart run.

The run is the quickstart cut to 1024 captions and three epochs (48 steps), with its probe and kNN
callbacks (192 steps, the full caption list, score the same: 19.0 % linear, 14.4 % kNN). From the
checkpoint alone, `stablerep probe` must reproduce the numbers the callbacks logged (same estimator,
same evaluation set `configs/eval/procedural_quickstart.yaml`, same features), and its paper-protocol
probe must score the trained backbone clearly above its random-init twin (measured: 19.0 % vs 13.1 %
linear, 14.0 % vs 12.9 % kNN; chance 8.3 %).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stablerep_pl.cli import StableRepCLI, main
from stablerep_pl.cli.probe import main as probe_main

ROOT = Path(__file__).resolve().parents[2]
EVAL_SET = ROOT / "configs" / "eval" / "procedural_quickstart.yaml"  # the callbacks' set
EPOCHS = 3
CAPTIONS = 1024  # 16 steps per epoch


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], Path]:
    """(checkpoint, final online metrics, eval-set YAML) of a quickstart run cut to EPOCHS epochs."""
    tmp = tmp_path_factory.mktemp("probe_cli")
    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    for callback in config["trainer"]["callbacks"]:
        if "eval_set" in callback.get("init_args", {}):
            callback["init_args"]["every_n_epochs"] = EPOCHS
    (tmp / "run.yaml").write_text(yaml.safe_dump(config))
    cli = StableRepCLI(
        args=[
            "fit", "--config", str(tmp / "run.yaml"), f"--trainer.max_epochs={EPOCHS}", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp}", f"--trainer.logger.init_args.save_dir={tmp}",
            f"--data.init_args.num_captions={CAPTIONS}",
        ]
    )  # fmt: skip
    metrics = {
        k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(("probe/", "knn/"))
    }
    ckpt = next(tmp.rglob("last.ckpt"))
    return ckpt, metrics, EVAL_SET


@pytest.mark.slow
def test_probe_reproduces_online_numbers_and_beats_random_init(
    trained: tuple[Path, dict[str, float], Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt, online, eval_set_yaml = trained
    args = [
        "--ckpt", str(ckpt), "--data", str(eval_set_yaml), "--baseline", "true", "--out", str(tmp_path),
        "--protocol.epochs=10", "--protocol.min_scale=0.5", "--protocol.num_workers=0",
        "--protocol.few_shot_episodes=100",
    ]  # fmt: skip
    report = probe_main(args)
    trained_results, random_results = report["results"]["trained"], report["results"]["random_init"]
    # Offline == online, from the checkpoint alone.
    assert 100 * trained_results["online_linear"]["top1"] == pytest.approx(
        online["probe/procedural/top1"], abs=1e-3
    )
    assert 100 * trained_results["knn"]["top1"] == pytest.approx(online["knn/procedural/top1"], abs=1e-3)
    assert 100 * random_results["online_linear"]["top1"] == pytest.approx(
        online["probe/procedural/baseline_top1"], abs=1e-3
    )
    # The paper protocol sees what training added.
    assert trained_results["linear"]["top1"] > random_results["linear"]["top1"] + 0.03
    assert trained_results["knn"]["top1"] > random_results["knn"]["top1"]
    assert trained_results["linear"]["augmented"] is True
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"]["trained"]["linear"]["top1"] == trained_results["linear"]["top1"]
    assert saved["protocol"]["epochs"] == 10 and saved["num_classes"] == 12
    assert list(tmp_path.glob("events.out.tfevents.*"))
    table = capsys.readouterr().out
    assert "linear" in table and "random_init" in table and "few_shot_5way_1shot" in table


def test_probe_is_a_stablerep_subcommand_with_clear_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--ckpt", str(tmp_path / "missing.ckpt"), "--data", str(EVAL_SET)])
    assert exit_info.value.code == 1
    assert "stablerep probe: error: FileNotFoundError: " in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no evaluation set given
        main(["probe", "--ckpt", str(tmp_path / "missing.ckpt")])


def test_shipped_probe_configs_parse() -> None:
    from stablerep_pl.cli.probe import build_parser

    for name in ("quickstart", "fashion_mnist", "imagenet"):
        config = build_parser().parse_args(
            ["--config", str(ROOT / "configs" / "probe" / f"{name}.yaml"), "--ckpt", "x.ckpt"]
        )
        assert config.data.class_path.startswith("stablerep_pl.evaluation.eval_sets.")
        assert config.protocol.epochs >= 1
