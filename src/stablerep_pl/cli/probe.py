"""`stablerep probe --ckpt CKPT --data EVAL_SET.yaml`: the offline protocol on a trained checkpoint.

CKPT is one of our runs' checkpoints, the authors' `epoch_last.pth` or a `stablerep export` file, each
read without running code from it (`models/safe_load.py`).

Prints a table, writes `results.json` and TensorBoard scalars under `--out`. `--baseline true` adds
the same architecture with random weights, so the table shows what training added.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile

from stablerep_pl.cli.errors import SubcommandParser
from stablerep_pl.distributed.devices import resolve_device
from stablerep_pl.evaluation.eval_sets import EvalSet
from stablerep_pl.evaluation.offline import ProbeProtocol, run_protocol
from stablerep_pl.interop.checkpoints import load_backbone

EXAMPLE = "stablerep probe --config configs/probe/quickstart.yaml --ckpt runs/quickstart/version_0/checkpoints/last.ckpt"


def build_parser() -> SubcommandParser:
    parser = SubcommandParser(prog="stablerep probe", description=__doc__, example=EXAMPLE)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_argument(
        "--ckpt", type=str, required=True,
        help="checkpoint: a stablerep run's (.ckpt), the authors' (epoch_last.pth) or an export (.safetensors)",
    )  # fmt: skip
    parser.add_subclass_arguments(
        EvalSet, "data", required=True, help="evaluation set (class_path/init_args or a YAML file)"
    )
    parser.add_argument("--protocol", type=ProbeProtocol, default=ProbeProtocol())
    parser.add_argument("--baseline", type=bool, default=False, help="also score a random-init backbone")
    parser.add_argument(
        "--out", type=str | None, default=None, help="directory for results.json and TensorBoard"
    )
    parser.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1 …")
    return parser


def probe_checkpoint(
    ckpt: str, eval_set: EvalSet, protocol: ProbeProtocol, baseline: bool = False, device: str = "auto"
) -> dict[str, Any]:
    """Results of the trained backbone (and, with `baseline`, of its random-init twin)."""
    target = resolve_device(device)
    report: dict[str, Any] = {
        "checkpoint": str(ckpt), "eval_set": eval_set.name, "num_classes": eval_set.num_classes,
        "protocol": asdict(protocol), "results": {},
    }  # fmt: skip
    runs = [("trained", False), *([("random_init", True)] if baseline else [])]
    for label, random_init in runs:
        start = time.perf_counter()
        backbone = load_backbone(ckpt, random_init=random_init, seed=protocol.seed)
        report["results"][label] = run_protocol(backbone, eval_set, protocol, target)
        report["results"][label]["seconds"] = round(time.perf_counter() - start, 1)
    return report


def format_table(report: dict[str, Any]) -> str:
    """One row per evaluation, one column per backbone (percentages)."""
    columns = list(report["results"])
    rows = [k for k in report["results"][columns[0]] if k != "seconds"]
    lines = [f"{'evaluation':<28}" + "".join(f"{c:>14}" for c in columns) + "   detail"]
    for row in rows:
        cells, detail = [], ""
        for column in columns:
            result = report["results"][column][row]
            cell = f"{100 * result['top1']:.1f}"
            if "ci95" in result:
                cell += f" ±{100 * result['ci95']:.1f}"
            cells.append(f"{cell:>14}")
        first = report["results"][columns[0]][row]
        if "best_lr" in first:
            detail = f"best lr {first['best_lr']:g}"
        elif "k" in first:
            detail = f"k {first['k']}, T {first['temperature']:g}"
        lines.append(f"{row:<28}" + "".join(cells) + f"   {detail}")
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """`results.json` and TensorBoard scalars `{backbone}/{evaluation}/top1` (percent)."""
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    with SummaryWriter(str(out)) as writer:
        writer.add_text("protocol", f"```\n{json.dumps(report['protocol'], indent=2)}\n```")
        for column, results in report["results"].items():
            for row, result in results.items():
                if isinstance(result, dict):
                    writer.add_scalar(f"{column}/{report['eval_set']}/{row}/top1", 100 * result["top1"], 0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    config = parser.parse_args(argv)
    objects = parser.instantiate_classes(config)
    eval_set: EvalSet = objects.data
    protocol = (
        objects.protocol if isinstance(objects.protocol, ProbeProtocol) else ProbeProtocol(**objects.protocol)
    )
    report = probe_checkpoint(config.ckpt, eval_set, protocol, config.baseline, config.device)
    out = Path(config.out or Path("runs") / "probe" / f"{Path(config.ckpt).stem}-{eval_set.name}")
    write_outputs(report, out)
    mode = "cached features" if protocol.cache_features else "RandomResizedCrop + flip"
    print(
        f"\n{eval_set.name}: {eval_set.num_classes} classes, linear probe on {mode}, {protocol.epochs} epochs"
    )
    print(format_table(report))
    print(f"\nwrote {out / 'results.json'} and TensorBoard scalars (tensorboard --logdir {out})")
    return report
