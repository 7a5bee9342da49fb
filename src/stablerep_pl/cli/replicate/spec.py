"""What a replication sweep is made of, as typed YAML: methods, studies, evaluation.

Plain dataclasses so jsonargparse checks every key of `configs/replicate/*.yaml` (a typo is a one-line
error, not a silently ignored study) and resolves `configs` paths relative to the YAML file that
names them, as `stablerep fit --config` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsonargparse.typing import Path_fr

Overrides = dict[str, Any]  # dotted `stablerep fit` keys → values, e.g. {"data.init_args.views": 2}


@dataclass
class MethodSpec:
    """A series of a study: fit configs composed after the base ones, then overrides."""

    label: str
    configs: list[Path_fr] = field(default_factory=list)
    overrides: Overrides = field(default_factory=dict)


@dataclass
class Point:
    """One x of a study and what it changes (applied after the method's own overrides)."""

    x: Any
    overrides: Overrides = field(default_factory=dict)


@dataclass
class StudySpec:
    """A comparison: every method of `methods` at every point, every seed.

    Points are `points`, or `vary` (one override key) over `values`; with neither, the study has a
    single point and compares the methods themselves (a bar chart). `overrides` apply to every point
    (e.g. the fixed m of the pool-size study). `claims` are the paper's findings as comparisons of
    cell means, `series@x > series@x` or differences of them (see `report.py`).
    """

    title: str
    methods: list[str]
    finding: str = ""
    x_label: str = ""
    vary: str | None = None
    values: list[Any] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    overrides: Overrides = field(default_factory=dict)
    claims: list[str] = field(default_factory=list)

    def resolved_points(self) -> list[Point]:
        """The study's points in order, whichever way they were written."""
        if self.points and self.vary:
            raise ValueError(f"study {self.title!r}: give points or vary/values, not both")
        if self.vary:
            if not self.values:
                raise ValueError(f"study {self.title!r}: vary {self.vary} needs values")
            points = [Point(x=v, overrides={self.vary: v}) for v in self.values]
        else:
            points = list(self.points) or [Point(x="")]
        return [Point(p.x, {**self.overrides, **p.overrides}) for p in points]


@dataclass
class EvalSetSpec:
    """An evaluation set of `stablerep probe`: its YAML, overrides of it, protocol settings of its
    own (a small set can afford more probe epochs), and a path it needs (a missing one skips the set
    with a note instead of failing every cell)."""

    data: Path_fr
    overrides: Overrides = field(default_factory=dict)
    protocol: Overrides = field(default_factory=dict)
    requires: str | None = None


@dataclass
class EvaluationSpec:
    """The offline protocol every cell is scored with. `metrics` are the table's and figures'
    columns, `set/evaluation` as `stablerep probe` names them (e.g. `procedural/linear`);
    `claim_metrics` those the claims are judged on (default: all), with `threshold_se` (see report.py)."""

    sets: dict[str, EvalSetSpec] = field(default_factory=dict)
    protocol: Overrides = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    claim_metrics: list[str] = field(default_factory=list)
    threshold_se: float = 2.0
