"""One PNG per study (matplotlib, Agg: no display needed) and the same numbers in TensorBoard.

Each figure has one panel per reported metric: one dot per method for a study that compares methods
at a single point (no bars: the axis zooms to the differences), lines over x otherwise; error bars are the sample std over seeds, the dashed line and band
the random-init backbone's mean ± std. Figures stay small (a few tens of kB) so they can be committed
under `docs/replicate/`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from stablerep_pl.cli.replicate.spec import StudySpec


def _numeric(keys: list[str]) -> list[float] | None:
    try:
        return [float(k) for k in keys]
    except ValueError:
        return None


def plot_study(
    path: Path, name: str, study: StudySpec, points: dict[str, dict[str, dict[str, Any]]],
    labels: dict[str, str], metrics: list[str], baseline: dict[str, dict[str, Any]],
) -> None:  # fmt: skip
    """Write `path` (PNG) for one study."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cols = min(len(metrics), 2) or 1
    rows = math.ceil(len(metrics) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    single = len(study.resolved_points()) == 1
    for ax, metric in zip(axes.flat, metrics):
        if single:
            names = list(points)
            stats = [next(iter(points[s].values()), {}).get(metric) for s in names]
            means = [100 * s["mean"] if s else 0.0 for s in stats]
            errs = [100 * (s["std"] or 0.0) if s else 0.0 for s in stats]
            ax.errorbar(range(len(names)), means, yerr=errs, fmt="o", capsize=4, color="tab:blue")
            ax.set_xticks(range(len(names)), [labels.get(s, s) for s in names], rotation=20, ha="right")
            ax.set_xlim(-0.5, len(names) - 0.5)
        else:
            for series, by_x in points.items():
                keys = [k for k, v in by_x.items() if metric in v]
                xs: list[Any] = _numeric(keys) or list(range(len(keys)))
                means = [100 * by_x[k][metric]["mean"] for k in keys]
                errs = [100 * (by_x[k][metric]["std"] or 0.0) for k in keys]
                ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=labels.get(series, series))
                if _numeric(keys) is None:
                    ax.set_xticks(xs, keys)
            ax.set_xlabel(study.x_label)
            if len(points) > 1:
                ax.legend(fontsize=7)
        floor = baseline.get(metric)
        if floor:
            mean, std = 100 * floor["mean"], 100 * (floor["std"] or 0.0)
            ax.axhline(mean, color="grey", linestyle="--", linewidth=1, label="random init")
            ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(study.title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_tensorboard(
    logdir: Path, table: dict[str, Any], baselines: dict[str, dict[str, Any]], report_text: str
) -> None:
    """Scalars `<study>/<metric>/<series>` (percent, step = the point's index; its x in the text),
    `baseline/<architecture>/<metric>`, and the Markdown report as text."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(logdir)) as writer:
        for study, by_series in table.items():
            for series, by_x in by_series.items():
                for step, stats in enumerate(by_x.values()):
                    for metric, value in stats.items():
                        writer.add_scalar(f"{study}/{metric}/{series}", 100 * value["mean"], step)
        for arch, stats in baselines.items():
            for metric, value in stats.items():
                writer.add_scalar(f"baseline/{arch}/{metric}", 100 * value["mean"], 0)
        writer.add_text("report", report_text)
