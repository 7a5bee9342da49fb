"""Studies × seeds → cells: each cell one `stablerep fit` and one `stablerep probe` per evaluation set.

A cell is identified by the hash of its *effective* fit config (the YAML files' content merged in
order, then the overrides) and its seed, not by the study that asked for it: the plain StableRep cell
of the method study, the m = 4 point of the positives study and the diversity-0 point of the
diversity study are one run when their configs agree, so the sweep trains it once. Editing a base
config changes every hash, so stale results are never reused. Evaluation has its own hash: changing
the probe protocol re-probes the checkpoints without retraining.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stablerep_pl.cli.replicate.spec import EvaluationSpec, MethodSpec, Overrides, StudySpec

FIT_LOGGER = {  # where each cell's fit writes; not part of the hash (the cell's folder is)
    "trainer.logger.init_args.name": "fit",
    "trainer.logger.init_args.version": 0,
}


@dataclass
class Membership:
    """Where a cell appears: a study, a series (method) and an x."""

    study: str
    series: str
    x: Any


@dataclass
class Cell:
    """One training run and its evaluations; `name` is its folder under `<out>/cells/`."""

    name: str
    method: str
    seed: int
    fit_hash: str
    eval_hash: str
    configs: list[str]
    overrides: Overrides
    architecture: str
    baseline: bool = False
    memberships: list[Membership] = field(default_factory=list)

    def fit_command(self, python: str, cell_dir: Path) -> list[str]:
        args = [python, "-m", "stablerep_pl.cli", "fit"]
        for path in self.configs:
            args += ["--config", display_path(path)]
        outputs = {**FIT_LOGGER, "trainer.logger.init_args.save_dir": display_path(cell_dir)}
        return args + [f"--{k}={cli_value(v)}" for k, v in {**self.overrides, **outputs}.items()]


def cli_value(value: Any) -> str:
    """A value as jsonargparse reads it back from the command line (YAML flow style)."""
    if isinstance(value, str):
        return value if yaml.safe_load(value) == value and value.strip() == value else json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def display_path(path: str | Path) -> str:
    """Relative to the working directory when below it (short, copy-pasteable), else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def shell_line(args: list[str], env: dict[str, str] | None = None) -> str:
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    return (prefix + " " if prefix else "") + " ".join(shlex.quote(a) for a in args)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Later YAML wins key by key; lists and scalars are replaced (as jsonargparse composes configs)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def effective_config(configs: list[str], overrides: Overrides) -> dict[str, Any]:
    """The fit config the cell trains with, as far as hashing needs it (files merged, overrides set)."""
    merged: dict[str, Any] = {}
    for path in configs:
        merged = deep_merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    for key, value in overrides.items():
        set_dotted(merged, key, value)
    return merged


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def lookup(config: dict[str, Any], *keys: str) -> Any:
    node: Any = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def architecture_of(config: dict[str, Any]) -> str:
    backbone = lookup(config, "model", "init_args", "backbone", "init_args", "name")
    return str(backbone or "unknown")


def images_per_step(config: dict[str, Any]) -> int | None:
    data = lookup(config, "data", "init_args") or {}
    views, batch = data.get("views"), data.get("batch_size")
    return int(views) * int(batch) if isinstance(views, int) and isinstance(batch, int) else None


@dataclass
class Schedule:
    """Training length shared by every cell: steps, warmup as a fraction of them, seeds."""

    steps: int
    warmup: float
    seeds: list[int]
    seed_keys: list[str]

    def overrides(self, seed: int) -> Overrides:
        return {
            "trainer.max_steps": self.steps,
            "trainer.max_epochs": -1,  # equal compute: every method stops after the same steps
            "model.init_args.optim.warmup_steps": round(self.warmup * self.steps),
            **{key: seed for key in self.seed_keys},
        }


def build_cells(
    base_configs: list[str],
    base_overrides: Overrides,
    methods: dict[str, MethodSpec],
    studies: dict[str, StudySpec],
    evaluation: EvaluationSpec,
    schedule: Schedule,
) -> list[Cell]:
    """Every distinct cell in run order: seed by seed (a sweep stopped early has whole seeds), then
    study by study. The first cell of each (architecture, seed) also scores the random-init baseline."""
    cells: dict[str, Cell] = {}
    baselines: set[tuple[str, int]] = set()
    eval_sets = {
        name: {
            "yaml": Path(spec.data.absolute).read_text(),
            "overrides": spec.overrides,
            "protocol": spec.protocol,
        }
        for name, spec in evaluation.sets.items()
    }
    for seed in schedule.seeds:
        for study_name, study in studies.items():
            for method_name in study.methods:
                if method_name not in methods:
                    raise ValueError(f"study {study_name}: unknown method {method_name!r}")
                method = methods[method_name]
                for point in study.resolved_points():
                    configs = [*base_configs, *(str(p.absolute) for p in method.configs)]
                    overrides = {**base_overrides, **method.overrides, **point.overrides}
                    overrides.update(schedule.overrides(seed))
                    config = effective_config(configs, overrides)
                    fit_hash = digest({"config": config, "seed": seed})
                    key = f"{method_name}-s{seed}-{fit_hash}"
                    if key not in cells:
                        arch = architecture_of(config)
                        baseline = (arch, seed) not in baselines
                        baselines.add((arch, seed))
                        probe = {"sets": eval_sets, "protocol": evaluation.protocol, "seed": seed,
                                 "baseline": baseline}  # fmt: skip
                        cells[key] = Cell(
                            name=key, method=method_name, seed=seed, fit_hash=fit_hash,
                            eval_hash=digest(probe), configs=configs, overrides=overrides,
                            architecture=arch, baseline=baseline,
                        )  # fmt: skip
                    cells[key].memberships.append(Membership(study_name, method_name, point.x))
    return list(cells.values())


def check_equal_compute(cells: list[Cell], studies: dict[str, StudySpec]) -> list[str]:
    """Studies whose cells push different numbers of images through the backbone per step (the
    comparison would not be at equal compute); returned as notes for the report."""
    notes = []
    for study_name in studies:
        sizes = {
            images_per_step(effective_config(c.configs, c.overrides))
            for c in cells
            if any(m.study == study_name for m in c.memberships)
        }
        if len(sizes) > 1:
            notes.append(f"{study_name}: images per step differ between cells ({sorted(map(str, sizes))})")
    return notes


def probe_command(
    python: str, cell: Cell, ckpt: Path, out: Path, set_name: str, evaluation: EvaluationSpec
) -> list[str]:
    """`stablerep probe` of one evaluation set, seeded by the cell's seed."""
    spec = evaluation.sets[set_name]
    args = [python, "-m", "stablerep_pl.cli", "probe", "--data", display_path(str(spec.data.absolute))]
    args += [f"--data.{k}={cli_value(v)}" for k, v in spec.overrides.items()]
    args += ["--ckpt", display_path(ckpt), "--out", display_path(out), "--device=cpu"]
    protocol = {**evaluation.protocol, **spec.protocol, "seed": cell.seed}
    args += [f"--protocol.{k}={cli_value(v)}" for k, v in protocol.items()]
    return args + ([f"--baseline={cli_value(cell.baseline)}"] if cell.baseline else [])


def default_python() -> str:
    return sys.executable
