"""`stablerep export CKPT --out FILE`: a run's backbone as timm-named safetensors, or a run in the authors' format.

`--format timm` (default): the backbone of our checkpoint or of the authors' `epoch_last.pth` as
safetensors. It loads with `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH),
num_classes=0, **kwargs)`; the command prints the exact call and writes it next to the file as
`PATH.json`, with a model card (`README.md`, Hugging Face format) unless `--card false`.
`--format authors`: our StableRep / StableRep+ checkpoint as the authors' `epoch_last.pth` (ViT-S/B/L/16
at 224 px only), which their `main_linear.py` loads.
"""

from __future__ import annotations

from typing import Literal

from jsonargparse import ActionConfigFile

from stablerep_pl.cli.errors import SubcommandParser
from stablerep_pl.interop.authors import export_authors_checkpoint
from stablerep_pl.interop.export import export_backbone

EXAMPLE = "stablerep export runs/quickstart/version_0/checkpoints/last.ckpt --out quickstart.safetensors"


def build_parser() -> SubcommandParser:
    parser = SubcommandParser(prog="stablerep export", description=__doc__, example=EXAMPLE)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_argument(
        "checkpoint", type=str, help="a Lightning checkpoint of a stablerep run, or the authors' .pth"
    )
    parser.add_argument(
        "--out", type=str, required=True, help="output .safetensors (or .pth with --format authors)"
    )
    parser.add_argument("--format", type=Literal["timm", "authors"], default="timm", help="timm or authors")
    parser.add_argument("--card", type=bool, default=True, help="write a model card beside a timm export")
    parser.add_argument("--license", type=str, default="apache-2.0", help="license in the model card")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.format == "authors":
        info = export_authors_checkpoint(args.checkpoint, args.out)
        kind = "StableRep+" if info["add_language"] else "StableRep"
        print(f"wrote {info['tensors']} tensors ({kind}, args.model={info['model']!r}) to {info['file']}")
        print(f"  their probe: python main_linear.py --model {info['model']} --pretrained {info['file']} ...")
        return
    info = export_backbone(args.checkpoint, args.out, card=args.card, license=args.license)
    kwargs = "".join(f", {k}={v!r}" for k, v in info["kwargs"].items())
    print(f"wrote {info['tensors']} tensors to {info['file']}; load with:")
    print(
        f"  timm.create_model({info['name']!r}, pretrained=True, "
        f"pretrained_cfg_overlay=dict(file={info['file']!r}), num_classes=0{kwargs})"
    )
    if "card" in info:
        print(f"model card: {info['card']}")
