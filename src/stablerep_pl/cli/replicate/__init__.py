"""`stablerep replicate --config configs/replicate/paper_findings.yaml`: the paper's findings in miniature.

Every cell of every study is an ordinary `stablerep fit` (the base fit configs, the method's, then
overrides) followed by `stablerep probe` on each evaluation set, run as subprocesses `jobs` at a time
and printed, so any cell can be redone by hand. Results land in `<out>/`: `cells/<cell>/result.json`
per run (the resume marker), `results.json` (every run, every metric, the commands, the hashes),
`results.md` (mean ± std over seeds and the verdict on each claim), `figures/<study>.png` and
TensorBoard scalars under `tensorboard/`. A rerun skips finished cells and redoes killed ones.

Scaling up on a GPU: raise `steps`, the resolution and `diversity` in the base fit config, swap the
backbone (`configs/backbones/*.yaml`), run one cell at a time (`jobs: 1`, `threads` unused there)
with `trainer.accelerator: gpu` and `data.init_args.num_workers` of 4 or more; on Stable Diffusion
shards point the methods at `configs/data/shards.yaml` and sweep `guidance_scale` at render time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ActionYesNo
from jsonargparse.typing import Path_fr

from stablerep_pl.cli.errors import SubcommandParser
from stablerep_pl.cli.replicate import execute, figures, plan, report
from stablerep_pl.cli.replicate.spec import EvaluationSpec, MethodSpec, Overrides, StudySpec

EXAMPLE = "stablerep replicate --config configs/replicate/paper_findings.yaml   # --quick: 1 seed, few steps"


@dataclass
class FitSpec:
    """The fit configs every cell starts from (in order), and overrides applied to all of them."""

    configs: list[Path_fr] = field(default_factory=list)
    overrides: Overrides = field(default_factory=dict)


def build_parser() -> SubcommandParser:
    parser = SubcommandParser(prog="stablerep replicate", description=__doc__, example=EXAMPLE)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_argument("--out", type=str, default="runs/replicate", help="results folder")
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2], help="seeds of every cell")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of every cell")
    parser.add_argument("--warmup", type=float, default=0.05, help="warmup, as a fraction of steps")
    parser.add_argument(
        "--seed_keys", type=list[str], default=["seed_everything"], help="fit keys set to the seed"
    )
    parser.add_argument("--jobs", type=int, default=2, help="cells run side by side")
    parser.add_argument("--threads", type=int, default=1, help="OMP/torch threads of each command")
    parser.add_argument("--fit", type=FitSpec, default=FitSpec())
    parser.add_argument("--methods", type=dict[str, MethodSpec], default={})
    parser.add_argument("--studies", type=dict[str, StudySpec], default={})
    parser.add_argument("--evaluation", type=EvaluationSpec, default=EvaluationSpec())
    parser.add_argument("--quick_preset", type=Path_fr | None, default=None, help="YAML applied by --quick")
    parser.add_argument(
        "--quick", action=ActionYesNo, default=False, help="apply quick_preset (1 seed, few steps)"
    )
    parser.add_argument("--only", type=list[str] | None, default=None, help="run only these studies")
    parser.add_argument(
        "--dry_run", action=ActionYesNo, default=False, help="print the plan and commands, run nothing"
    )
    parser.add_argument(
        "--report_only", action=ActionYesNo, default=False, help="aggregate finished cells only"
    )
    parser.add_argument(
        "--docs", type=str | None, default=None, help="also copy results.md and figures here (docs/replicate)"
    )
    return parser


def with_preset(argv: list[str], preset: str) -> list[str]:
    """`argv` with `--config preset` right after the last `--config`, so command-line options still win."""
    marks = [i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")]
    at = (marks[-1] + (2 if argv[marks[-1]] == "--config" else 1)) if marks else 0
    return [*argv[:at], "--config", preset, *argv[at:]]


def parse(argv: list[str]) -> tuple[Any, Any]:
    """(the parsed config, its instantiated objects), with the quick preset applied on `--quick`."""
    parser = build_parser()
    config = parser.parse_args(argv)
    if config.quick:
        if config.quick_preset is None:
            parser.error("--quick needs quick_preset in the config")
        config = parser.parse_args(with_preset(argv, str(config.quick_preset.absolute)))
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return config, instantiate(config)


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config, objects = parse(list(sys.argv[1:] if argv is None else argv))
    out = Path(config.out)
    studies: dict[str, StudySpec] = dict(objects.studies)
    if config.only:
        unknown = set(config.only) - set(studies)
        if unknown:
            raise ValueError(f"--only names unknown studies {sorted(unknown)}; have {', '.join(studies)}")
        studies = {k: v for k, v in studies.items() if k in config.only}
    evaluation: EvaluationSpec = objects.evaluation
    notes = []
    for name, spec in list(evaluation.sets.items()):
        if spec.requires and not Path(spec.requires).exists():
            notes.append(f"evaluation set {name} skipped: {spec.requires} does not exist")
            del evaluation.sets[name]
    metrics = [m for m in evaluation.metrics if m.split("/")[0] in evaluation.sets]
    schedule = plan.Schedule(config.steps, config.warmup, list(config.seeds), list(config.seed_keys))
    base_configs = [str(p.absolute) for p in objects.fit.configs]
    methods: dict[str, MethodSpec] = dict(objects.methods)
    cells = plan.build_cells(base_configs, objects.fit.overrides, methods, studies, evaluation, schedule)
    notes += plan.check_equal_compute(cells, studies)
    for note in notes:
        print(f"note: {note}")
    if config.dry_run:
        for cell in cells:
            done = execute.finished_result(out, cell) is not None
            print(f"{'done' if done else 'todo'} {cell.name}: "
                  f"{plan.shell_line(cell.fit_command(plan.default_python(), execute.cell_dir(out, cell)))}")  # fmt: skip
        return {"cells": [asdict(c) for c in cells]}
    require_matplotlib()
    failures: list[str] = []
    if config.report_only:
        results = [r for c in cells if (r := execute.finished_result(out, c)) is not None]
    else:
        results, failures = run(cells, out, evaluation, config.jobs, child_env(config.threads))
    summary = write_report(
        out, config, cells, results, studies, methods, evaluation, metrics, notes, failures
    )
    if config.docs:
        copy_to_docs(out, Path(config.docs), list(studies))
    if failures:
        raise RuntimeError(
            f"{len(failures)} cells failed (rerun the same command to retry them):\n" + "\n".join(failures)
        )
    return summary


def require_matplotlib() -> None:
    """Fail before hours of training, not at the first figure."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        sys.exit(
            "stablerep replicate: error: the figures need matplotlib: pip install 'stablerep_pl[replicate]'"
        )


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the runner's cleanup stops the commands it started


def run(
    cells: list[plan.Cell], out: Path, evaluation: EvaluationSpec, jobs: int, env: dict[str, str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """`execute.run_cells`, with SIGTERM treated as Ctrl-C: the commands started are stopped, finished
    cells kept, and the message says how to continue."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        return execute.run_cells(cells, out, evaluation, jobs, plan.default_python(), env)
    except KeyboardInterrupt:
        sys.exit(
            "\nstablerep replicate: interrupted; finished cells are kept, rerun the same command to continue"
        )
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def write_report(
    out: Path, config: Any, cells: list[plan.Cell], results: list[dict[str, Any]],
    studies: dict[str, StudySpec], methods: dict[str, MethodSpec], evaluation: EvaluationSpec,
    metrics: list[str], notes: list[str], failures: list[str],
) -> dict[str, Any]:  # fmt: skip
    """results.json, results.md, figures/*.png and TensorBoard from the finished cells."""
    labels = {name: spec.label for name, spec in methods.items()}
    table = report.aggregate(results, studies, metrics)
    baselines = report.baseline_stats(results, metrics)
    claim_metrics = [m for m in evaluation.claim_metrics or metrics if m in metrics]
    claims = report.judge_all(table, studies, claim_metrics, evaluation.threshold_se)
    dumped = json.loads(json.dumps(config.as_dict(), default=str))
    header = settings_lines(config, cells, results, evaluation, notes, failures, plan.digest(dumped))
    text = report.markdown(table, studies, labels, metrics, baselines, claims, header)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    for name, study in studies.items():
        arch_floor = next(iter(baselines.values()), {})
        figures.plot_study(
            out / "figures" / f"{name}.png", name, study, table[name], labels, metrics, arch_floor
        )
    shutil.rmtree(out / "tensorboard", ignore_errors=True)
    figures.write_tensorboard(out / "tensorboard", table, baselines, text)
    summary = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cwd": os.getcwd(),
        "config": dumped, "config_hash": plan.digest(dumped), "metrics": metrics, "notes": notes,
        "failures": failures, "cells_planned": len(cells), "cells_finished": len(results),
        "baseline": baselines, "studies": table, "claims": claims, "runs": results,
    }  # fmt: skip
    execute.write_json(out / "results.json", summary)
    print(f"\n{text}\n\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'figures'}/*.png; "
          f"tensorboard --logdir {out / 'tensorboard'}")  # fmt: skip
    return summary


def settings_lines(
    config: Any, cells: list[plan.Cell], results: list[dict[str, Any]], evaluation: EvaluationSpec,
    notes: list[str], failures: list[str], config_hash: str,
) -> list[str]:  # fmt: skip
    """What the numbers are: steps, images per step, seeds, the probe protocol, the cost."""
    images = sorted({r["train"].get("global_batch_images") for r in results if r["train"]} - {None})
    cpu = sum(t["cpu"] for r in results for t in r["timings"].values())
    protocol = ", ".join(f"{k} {v}" for k, v in evaluation.protocol.items())
    lines = [
        f"{len(results)} of {len(cells)} runs finished; {config.steps} steps each, "
        f"images through the backbone per step: {', '.join(map(str, images)) or '–'}; "
        f"seeds {config.seeds}; top-1 % as mean ± sample std over seeds.",
        f"Offline protocol (`stablerep probe`, cheap on purpose): {protocol}. Sets: {', '.join(evaluation.sets)}.",
        f"Cost: {cpu / 3600:.2f} CPU hours over the finished runs. Config hash `{config_hash}`.",
    ]
    lines += [f"Note: {n}" for n in notes] + [f"Failed: {f.splitlines()[0]}" for f in failures]
    return lines


def copy_to_docs(out: Path, docs: Path, studies: list[str]) -> None:
    """The small, committable part of the results: the table and the figures."""
    (docs / "figures").mkdir(parents=True, exist_ok=True)
    shutil.copy2(out / "results.md", docs / "results.md")
    for name in studies:
        shutil.copy2(out / "figures" / f"{name}.png", docs / "figures" / f"{name}.png")
