"""From finished cells to mean ± std over seeds, judged claims and the Markdown table.

A claim is a comparison of cell means on one metric, e.g. `stablerep > simclr` (method study, one
point) or `stablerep@0.5 - stablerep@0 > simclr@0.5 - simclr@0` (an interaction: StableRep gains
more from diversity than SimCLR). Its effect d is the left side minus the right side, its standard
error se = sqrt(Σ c² s²/n) over the cells involved (s the sample std over seeds, n the seeds), and

- reproduced: d > threshold · se (default 2: about a 95 % one-sided test on a normal approximation)
- not reproduced: d < −threshold · se (the opposite direction, just as clearly)
- inconclusive: anything in between, or fewer than 2 seeds in a cell (no spread to judge against).

`>=` claims are judged the same way: a tie within the noise is inconclusive, not a success.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from stablerep_pl.cli.replicate.spec import StudySpec

_TERM = re.compile(r"([+-]?)\s*([A-Za-z_]\w*)(?:@([\w.]+))?")


def x_key(x: Any) -> str:
    """One spelling per x: 6, 6.0 and "6" are the same point; 0.50 is "0.5"."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    return str(int(value)) if value.is_integer() else repr(value)


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (n − 1; None for one value), n and the values."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "values": values}


def aggregate(
    results: list[dict[str, Any]], studies: dict[str, StudySpec], metrics: list[str]
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """`{study: {series: {x: {metric: mean_std + seeds}}}}` in the studies' own order."""
    table: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for name, study in studies.items():
        table[name] = {}
        for series in study.methods:
            table[name][series] = {}
            for point in study.resolved_points():
                cells = [
                    r for r in results
                    if any(m["study"] == name and m["series"] == series
                           and x_key(m["x"]) == x_key(point.x) for m in r["memberships"])
                ]  # fmt: skip
                cells.sort(key=lambda r: r["seed"])
                stats = {}
                for metric in metrics:
                    pairs = [(r["seed"], r["metrics"][metric]) for r in cells if metric in r["metrics"]]
                    if pairs:
                        stats[metric] = {**mean_std([v for _, v in pairs]), "seeds": [s for s, _ in pairs]}
                table[name][series][x_key(point.x)] = stats
    return table


def baseline_stats(results: list[dict[str, Any]], metrics: list[str]) -> dict[str, dict[str, Any]]:
    """Random-init scores over seeds, per architecture: `{architecture: {metric: mean_std}}`."""
    by_arch: dict[str, dict[str, list[float]]] = {}
    for result in sorted(results, key=lambda r: r["seed"]):
        for metric, value in result.get("baseline", {}).items():
            if metric in metrics:
                by_arch.setdefault(result["architecture"], {}).setdefault(metric, []).append(value)
    return {arch: {m: mean_std(v) for m, v in found.items()} for arch, found in by_arch.items()}


def parse_side(text: str) -> list[tuple[int, str, str | None]]:
    """`a@x - b@y + c` → [(+1, a, x), (−1, b, y), (+1, c, None)]."""
    terms = [(-1 if sign == "-" else 1, name, x) for sign, name, x in _TERM.findall(text)]
    if not terms or _TERM.sub("", text).strip():
        raise ValueError(f"cannot read {text!r}: write terms as series@x joined by + or -")
    return [(sign, name, x or None) for sign, name, x in terms]


def judge(claim: str, study: dict[str, dict[str, dict[str, Any]]], metric: str, threshold: float) -> dict:
    """The verdict of one claim on one metric (see the module docstring)."""
    relation = ">=" if ">=" in claim else ">"
    left, _, right = claim.partition(relation)
    terms = parse_side(left) + [(-sign, name, x) for sign, name, x in parse_side(right)]
    diff, variance, seeds = 0.0, 0.0, []
    for sign, series, x in terms:
        points = study.get(series)
        if points is None:
            raise ValueError(f"claim {claim!r}: no series {series!r} (have {', '.join(study)})")
        key = x_key(x) if x is not None else next(iter(points))
        stats = points.get(key, {}).get(metric)
        if stats is None:
            return {"claim": claim, "metric": metric, "verdict": "inconclusive (missing cells)"}
        diff += sign * stats["mean"]
        variance += (stats["std"] or 0.0) ** 2 / stats["n"]
        seeds.append(stats["n"])
    se = math.sqrt(variance)
    if min(seeds) < 2:
        verdict = "inconclusive (fewer than 2 seeds)"
    elif diff > threshold * se:
        verdict = "reproduced"
    elif diff < -threshold * se:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return {"claim": claim, "metric": metric, "difference": diff, "se": se, "threshold": threshold,
            "verdict": verdict}  # fmt: skip


def judge_all(
    table: dict[str, Any], studies: dict[str, StudySpec], metrics: list[str], threshold: float
) -> list[dict[str, Any]]:
    return [
        {"study": name, **judge(claim, table[name], metric, threshold)}
        for name, study in studies.items()
        for claim in study.claims
        for metric in metrics
    ]


def pct(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "–"
    spread = f" ± {100 * stats['std']:.1f}" if stats["std"] is not None else ""
    return f"{100 * stats['mean']:.1f}{spread}"


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(
    table: dict[str, Any], studies: dict[str, StudySpec], labels: dict[str, str], metrics: list[str],
    baselines: dict[str, dict[str, Any]], claims: list[dict[str, Any]], header: list[str],
) -> str:  # fmt: skip
    """The whole report: settings, the random-init row, one table and its claims per study."""
    lines = ["# Does it reproduce? StableRep's findings in miniature", "", *header, ""]
    head = _row(["", *metrics])
    rule = _row(["---"] * (len(metrics) + 1))
    if baselines:
        lines += ["Random-init backbone (the floor), top-1 % mean ± std over seeds:", "", head, rule]
        lines += [
            _row([f"random init ({arch})", *(pct(s.get(m)) for m in metrics)])
            for arch, s in baselines.items()
        ]
        lines.append("")
    for name, study in studies.items():
        lines += [f"## {study.title}", ""]
        if study.finding:
            lines += [f"Paper: {study.finding}", ""]
        x_title = study.x_label or "x"
        single = len(study.resolved_points()) == 1
        lines += [_row(["method" if single else f"method @ {x_title}", *metrics]), rule]
        for series, points in table[name].items():
            for x, stats in points.items():
                label = labels.get(series, series) + ("" if single else f" @ {x}")
                lines.append(_row([label, *(pct(stats.get(m)) for m in metrics)]))
        found = [c for c in claims if c["study"] == name]
        if found:
            lines += ["", _row(["claim", "metric", "difference (points)", "threshold × SE", "verdict"])]
            lines.append(_row(["---"] * 5))
            for c in found:
                diff = f"{100 * c['difference']:+.1f}" if "difference" in c else "–"
                se = f"{100 * c['threshold'] * c['se']:.1f}" if "se" in c else "–"
                lines.append(_row([f"`{c['claim']}`", c["metric"], diff, se, f"**{c['verdict']}**"]))
        lines += ["", f"![{name}](figures/{name}.png)", ""]
    return "\n".join(lines)
