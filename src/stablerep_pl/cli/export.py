"""`stablerep export CKPT --out backbone.safetensors`: a run's backbone as timm-named safetensors.

The file loads with `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH),
num_classes=0, **kwargs)`; the command prints the exact call and writes it next to the file as `PATH.json`.
"""

from __future__ import annotations

from jsonargparse import ActionConfigFile

from stablerep_pl.cli.errors import SubcommandParser
from stablerep_pl.interop.export import export_backbone

EXAMPLE = "stablerep export runs/quickstart/version_0/checkpoints/last.ckpt --out quickstart.safetensors"


def build_parser() -> SubcommandParser:
    parser = SubcommandParser(prog="stablerep export", description=__doc__, example=EXAMPLE)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_argument("checkpoint", type=str, help="a Lightning checkpoint of a stablerep run")
    parser.add_argument("--out", type=str, required=True, help="output .safetensors path")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    info = export_backbone(args.checkpoint, args.out)
    kwargs = "".join(f", {k}={v!r}" for k, v in info["kwargs"].items())
    print(f"wrote {info['tensors']} tensors to {info['file']}; load with:")
    print(
        f"  timm.create_model({info['name']!r}, pretrained=True, "
        f"pretrained_cfg_overlay=dict(file={info['file']!r}), num_classes=0{kwargs})"
    )
