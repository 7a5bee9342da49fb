"""The CLI on the quickstart config: fast_dev_run, backbone override, --print_config."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from stablerep_pl.cli import StableRepCLI, main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
SMALL = [
    "--data.init_args.num_captions=64",
    "--data.init_args.batch_size=8",
    "--data.init_args.num_workers=0",
]


def fast_args(tmp_path: Path) -> list[str]:
    return [
        "--config", QUICKSTART, *SMALL,
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]  # fmt: skip


def test_fit_fast_dev_run_on_quickstart(tmp_path: Path) -> None:
    cli = StableRepCLI(args=["fit", *fast_args(tmp_path)])
    assert cli.trainer.global_step == 2
    assert type(cli.model).__name__ == "StableRep"
    assert cli.model.backbone.name == "resnet10t"


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_backbone_is_one_override(tmp_path: Path, name: str) -> None:
    # Without the quickstart's probe callbacks: at start they embed 1200 images twice (40 s for a ViT).
    args = ["fit", *fast_args(tmp_path), f"--model.backbone.name={name}", "--trainer.callbacks=[]"]
    cli = StableRepCLI(args=args)
    assert cli.model.backbone.name == name
    assert cli.trainer.global_step == 2
    if name.startswith("vit"):  # img_size and patch_size from the config reach the ViT
        assert cli.model.backbone.model.patch_embed.grid_size == (8, 8)


def test_print_config_is_complete_yaml(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART, "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "stablerep_pl.methods.StableRep"
    assert config["model"]["init_args"]["temperature"] == 0.1
    assert config["data"]["init_args"]["views"] == 4


def test_console_script_is_installed(capsys) -> None:
    # The installed script is run as a real process in the next test; here its presence and the help.
    exe = Path(sys.executable).with_name("stablerep")
    assert exe.is_file() and os.access(exe, os.X_OK)
    main(["--help"])
    out = capsys.readouterr().out
    assert "fit" in out and "validate" in out


def test_console_script_exits_zero_when_a_subcommand_returns_a_value(tmp_path: Path) -> None:
    # `sys.exit(main())` in the installed script: a returned dict used to be printed to stderr, exit 1.
    exe = Path(sys.executable).with_name("stablerep")
    config = ROOT / "configs" / "replicate" / "paper_findings.yaml"
    args = [str(exe), "replicate", "--config", str(config), "--quick", "--dry_run", f"--out={tmp_path}"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "{'cells'" not in out.stderr and "todo " in out.stdout


def test_validate_and_test_report_held_out_loss(tmp_path: Path) -> None:
    fit = StableRepCLI(args=["fit", *fast_args(tmp_path), "--data.init_args.val_captions=16"])
    ckpt = tmp_path / "model.ckpt"
    fit.trainer.save_checkpoint(ckpt)
    # The reference: the checkpoint's weights in eval mode on every held-out batch, under the run's
    # precision (the quickstart's bf16 autocast), averaged by hand.
    model = fit.model.eval()
    with torch.no_grad(), fit.trainer.precision_plugin.forward_context():
        losses = [model.compute_losses(b)["loss"] for b in fit.datamodule.val_dataloader()]
    assert len(losses) == 2  # 16 held-out captions in batches of 8 (equal weights in Lightning's mean)
    expected = float(torch.stack(losses).mean())
    for command in ("validate", "test"):
        args = [a for a in fast_args(tmp_path) if "fast_dev_run" not in a]
        cli = StableRepCLI(args=[command, *args, "--data.init_args.val_captions=16", f"--ckpt_path={ckpt}"])
        loss = cli.trainer.callback_metrics[f"{'val' if command == 'validate' else 'test'}/loss"]
        assert 0 < float(loss) < 10
        assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_validate_without_held_out_captions_is_a_clear_error(tmp_path: Path) -> None:
    args = [a for a in fast_args(tmp_path) if "fast_dev_run" not in a]
    with pytest.raises(ValueError, match="val_captions"):
        StableRepCLI(args=["validate", *args, "--data.init_args.val_captions=0"])
