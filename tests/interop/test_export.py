"""`stablerep export`: the backbone loads in timm with identical features."""

from pathlib import Path

import pytest
import timm
import torch

from stablerep_pl.cli import StableRepCLI, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backbone", ["resnet10t", "vit_tiny_patch16_224"])
def test_export_round_trip_through_timm(tmp_path: Path, backbone: str, capsys) -> None:
    cli = StableRepCLI(
        args=[
            "fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--model.backbone.name={backbone}",
            "--data.init_args.num_captions=64", "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
            "--trainer.max_steps=2", "--trainer.max_epochs=1", "--trainer.logger=false",
            "--trainer.callbacks=[]", f"--trainer.default_root_dir={tmp_path}",
        ]
    )  # fmt: skip
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    out = tmp_path / "backbone.safetensors"
    capsys.readouterr()
    main(["export", str(ckpt), "--out", str(out)])  # in-process: a real process is tested in test_cli_fit
    assert "timm.create_model" in capsys.readouterr().out
    kwargs = {"img_size": 32, "patch_size": 4} if backbone.startswith("vit") else {}
    loaded = timm.create_model(
        backbone, pretrained=True, pretrained_cfg_overlay=dict(file=str(out)), num_classes=0, **kwargs
    ).eval()
    trained = cli.model.backbone.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x))
