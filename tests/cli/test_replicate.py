"""`stablerep replicate`: a reduced sweep end to end, killed mid-way and resumed; its numbers, figures
and TensorBoard scalars; the verdict rule on hand-computed numbers; the shipped configs' plan.

The reduced sweep: 2 seeds × (StableRep, SupCon with object labels, StableRep at diversity 0.5), 2
steps of 16 images, a 12-class procedural probe of 6/3 images per class (about a minute on 2 cores).
The StableRep cell of the method study and diversity 0 of the diversity study are one run.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stablerep_pl.cli.replicate import main, with_preset
from stablerep_pl.cli.replicate.plan import cli_value
from stablerep_pl.cli.replicate.report import aggregate, judge, x_key
from stablerep_pl.cli.replicate.spec import StudySpec

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "replicate" / "paper_findings.yaml"


def reduced_config(tmp: Path) -> Path:
    (tmp / "eval.yaml").write_text(yaml.safe_dump({
        "class_path": "stablerep_pl.evaluation.eval_sets.ProceduralEvalSet",
        "init_args": {"image_size": 32, "render_size": 32, "train_per_class": 6, "test_per_class": 3, "diversity": 0.0},
    }))  # fmt: skip
    config = {
        "out": str(tmp / "out"), "seeds": [0, 1], "steps": 2, "warmup": 0.0, "jobs": 2,
        "fit": {
            "configs": [str(ROOT / "configs" / "quickstart.yaml"), str(ROOT / "configs" / "replicate" / "fit_cpu.yaml")],
            "overrides": {
                "data.init_args.num_captions": 64, "data.init_args.batch_size": 8, "data.init_args.views": 2,
                "data.init_args.images_per_caption": 3, "model.init_args.head_hidden_dim": 64,
                "model.init_args.head_out_dim": 32, "trainer.log_every_n_steps": 1,
            },
        },
        "methods": {
            "stablerep": {"label": "StableRep"},
            "supcon": {"label": "SupCon", "overrides": {
                "data.class_path": "stablerep_pl.data.labels.LabelledGeneratorDataModule",
                "data.init_args.label_mode": "object"}},
        },
        "studies": {
            "method": {"title": "Method", "methods": ["stablerep", "supcon"], "claims": ["supcon > stablerep"]},
            "diversity": {"title": "Diversity", "methods": ["stablerep"], "x_label": "diversity",
                          "vary": "data.init_args.generator.init_args.diversity", "values": [0.0, 0.5],
                          "claims": ["stablerep@0.5 > stablerep@0"]},
        },
        "evaluation": {
            "sets": {"procedural": {"data": "eval.yaml"},
                     "fashion_mnist": {"data": "eval.yaml", "requires": "/nonexistent/fashion-mnist"}},
            "protocol": {"cache_features": True, "epochs": 1, "num_workers": 0, "knn_k": 5,
                         "online_estimator": False, "few_shot_episodes": 0},
            "metrics": ["procedural/linear", "procedural/knn", "fashion_mnist/linear"],
        },
    }  # fmt: skip
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Start the sweep one cell at a time, SIGKILL the whole process group once the first cell is
    finished and the next one is training, then rerun the same command to completion."""
    tmp = tmp_path_factory.mktemp("replicate")
    config = reduced_config(tmp)
    cells = tmp / "out" / "cells"
    first = subprocess.Popen(
        [sys.executable, "-m", "stablerep_pl.cli", "replicate", "--config", str(config), "--jobs", "1"],
        cwd=tmp, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline:
            done = {p.parent.name for p in cells.glob("*/result.json")}
            started = {p.name for p in cells.glob("*") if (p / "logs" / "fit.log").exists()}
            if done and started - done:
                break
            assert first.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.2)
        else:
            pytest.fail("no cell finished in time")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = {name: (cells / name / "result.json").read_bytes() for name in done}
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        summary = main(["--config", str(config)])
    finally:
        os.chdir(cwd)
    return {"tmp": tmp, "summary": summary, "before": before, "interrupted": started - done}


@pytest.mark.slow
def test_a_rerun_keeps_finished_cells_and_redoes_the_rest(sweep: dict) -> None:
    cells = sweep["tmp"] / "out" / "cells"
    summary = sweep["summary"]
    assert summary["cells_planned"] == summary["cells_finished"] == 6  # 2 seeds x 3 distinct runs
    for name, content in sweep["before"].items():
        assert (cells / name / "result.json").read_bytes() == content  # not rerun
    for name in sweep["interrupted"]:
        assert (cells / name / "result.json").is_file()  # killed mid-training, redone
    stablerep_plain = [
        r for r in summary["runs"] if r["method"] == "stablerep" and len(r["memberships"]) == 2
    ]
    assert len(stablerep_plain) == 2  # the method cell is diversity 0: trained once per seed


@pytest.mark.slow
def test_results_json_holds_every_run_metric_command_and_hash(sweep: dict) -> None:
    saved = json.loads((sweep["tmp"] / "out" / "results.json").read_text())
    assert saved["notes"] == [
        "evaluation set fashion_mnist skipped: /nonexistent/fashion-mnist does not exist"
    ]
    assert len(saved["config_hash"]) == 12 and saved["metrics"] == ["procedural/linear", "procedural/knn"]
    for run in saved["runs"]:
        assert set(run["metrics"]) == {"procedural/linear", "procedural/knn"}
        assert run["train"] == {"global_batch_images": 16, "total_steps": 2, "warmup_steps": 0}
        assert (
            "stablerep_pl.cli fit" in run["commands"]["fit"]
            and f"--seed_everything={run['seed']}" in run["commands"]["fit"]
        )
        assert "stablerep_pl.cli probe" in run["commands"]["probe_procedural"]
        assert run["timings"]["fit"]["cpu"] > 0 and len(run["fit_hash"]) == 12
    baselines = [r for r in saved["runs"] if "baseline" in r]
    assert sorted(r["seed"] for r in baselines) == [0, 1]  # random init once per architecture and seed
    assert saved["baseline"]["resnet10t"]["procedural/linear"]["n"] == 2
    supcon = [r for r in saved["runs"] if r["method"] == "supcon"]
    assert all("label_mode=object" in r["commands"]["fit"] for r in supcon)


@pytest.mark.slow
def test_aggregates_are_mean_and_sample_std_of_the_runs(sweep: dict) -> None:
    saved = json.loads((sweep["tmp"] / "out" / "results.json").read_text())
    runs = saved["runs"]
    for study, by_series in saved["studies"].items():
        for series, by_x in by_series.items():
            for x, stats in by_x.items():
                for metric, cell in stats.items():
                    mine = sorted(
                        (r["seed"], r["metrics"][metric]) for r in runs
                        if any(m["study"] == study and m["series"] == series and x_key(m["x"]) == x
                               for m in r["memberships"])
                    )  # fmt: skip
                    values = [v for _, v in mine]
                    assert cell["values"] == values and cell["seeds"] == [0, 1]
                    assert cell["mean"] == pytest.approx(statistics.mean(values))
                    assert cell["std"] == pytest.approx(statistics.stdev(values))
    table = (sweep["tmp"] / "out" / "results.md").read_text()
    assert "## Method" in table and "StableRep @ 0.5" in table and "`supcon > stablerep`" in table


@pytest.mark.slow
def test_figures_are_written_and_not_empty(sweep: dict) -> None:
    import matplotlib.pyplot as plt

    for study in ("method", "diversity"):
        path = sweep["tmp"] / "out" / "figures" / f"{study}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        image = plt.imread(path)
        assert image.shape[0] > 100 and image[..., :3].std() > 0.01  # drawn, not blank


@pytest.mark.slow
def test_tensorboard_holds_the_study_means(sweep: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(sweep["tmp"] / "out" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "method/procedural/linear/supcon" in tags and "baseline/resnet10t/procedural/knn" in tags
    points = events.Scalars("diversity/procedural/linear/stablerep")
    means = sweep["summary"]["studies"]["diversity"]["stablerep"]
    assert [p.step for p in points] == [0, 1]
    assert [p.value for p in points] == pytest.approx(
        [100 * means[x]["procedural/linear"]["mean"] for x in ("0", "0.5")]
    )


@pytest.mark.slow
def test_a_stored_command_reruns_its_cell_by_hand(sweep: dict) -> None:
    run = sweep["summary"]["runs"][0]
    probe = Path(sweep["tmp"] / "out" / "cells" / run["name"] / "probe_procedural" / "results.json")
    before = json.loads(probe.read_text())["results"]["trained"]["linear"]["top1"]
    subprocess.run(run["commands"]["probe_procedural"], shell=True, cwd=sweep["summary"]["cwd"], check=True,
                   capture_output=True)  # fmt: skip
    assert json.loads(probe.read_text())["results"]["trained"]["linear"]["top1"] == before


def _results(values: dict[tuple[str, str], list[float]]) -> list[dict]:
    return [
        {"seed": seed, "memberships": [{"study": "s", "series": series, "x": x}], "metrics": {"m": value}}
        for (series, x), numbers in values.items()
        for seed, value in enumerate(numbers)
    ]


def test_verdicts_on_hand_computed_numbers() -> None:
    study = StudySpec(title="s", methods=["a", "b"], vary="k", values=[2, 6])
    table = aggregate(_results({
        ("a", "2"): [0.40, 0.42, 0.44], ("a", "6"): [0.50, 0.54, 0.58],
        ("b", "2"): [0.45, 0.45, 0.45], ("b", "6"): [0.46, 0.44, 0.45],
    }), {"s": study}, ["m"])["s"]  # fmt: skip
    assert table["a"]["6"]["m"]["mean"] == pytest.approx(0.54)
    assert table["a"]["6"]["m"]["std"] == pytest.approx(0.04)  # sample std: sqrt((0.04² + 0 + 0.04²) / 2)
    up = judge("a@6 > a@2", table, "m", 2.0)  # d = 0.12, se = sqrt(0.04²/3 + 0.02²/3) = 0.0258
    assert up["difference"] == pytest.approx(0.12) and up["se"] == pytest.approx(0.025820, abs=1e-6)
    assert up["verdict"] == "reproduced"
    assert judge("a@2 > a@6", table, "m", 2.0)["verdict"] == "not reproduced"
    assert judge("b@6 >= b@2", table, "m", 2.0)["verdict"] == "inconclusive"  # d = 0, se = 0.0058
    interaction = judge("a@6 - a@2 > b@6 - b@2", table, "m", 2.0)  # d = (0.54 - 0.42) - (0.45 - 0.45)
    assert interaction["difference"] == pytest.approx(0.12) and interaction["verdict"] == "reproduced"
    one_seed = aggregate(_results({("a", "2"): [0.4], ("a", "6"): [0.9]}), {"s": study}, ["m"])["s"]
    assert judge("a@6 > a@2", one_seed, "m", 2.0)["verdict"] == "inconclusive (fewer than 2 seeds)"
    with pytest.raises(ValueError, match="no series"):
        judge("c@2 > a@2", table, "m", 2.0)


def test_points_values_and_flags_are_read_back_as_written() -> None:
    assert [x_key(v) for v in (6, 6.0, "6", 0.50, "0.25", "")] == ["6", "6", "6", "0.5", "0.25", ""]
    assert [cli_value(v) for v in (0.25, 2, False, "object", "0.5", [1, 5], None)] == [
        "0.25", "2", "false", "object", '"0.5"', "[1, 5]", "null"]  # fmt: skip
    assert with_preset(["--config", "a.yaml", "--steps", "9"], "q.yaml") == [
        "--config", "a.yaml", "--config", "q.yaml", "--steps", "9"]  # fmt: skip
    assert with_preset(["--config=a.yaml"], "q.yaml") == ["--config=a.yaml", "--config", "q.yaml"]


def test_the_shipped_sweep_plans_equal_compute_cells(capsys: pytest.CaptureFixture) -> None:
    full = main(["--config", str(SHIPPED), "--dry_run"])["cells"]
    quick = main(["--config", str(SHIPPED), "--quick", "--dry_run"])["cells"]
    out = capsys.readouterr().out
    assert "images per step differ" not in out
    assert len(full) == 3 * len(quick) == 54  # per seed: 5 methods, 3 more m, 8 more diversities, 2 more k
    assert {c["seed"] for c in quick} == {0} and all(c["overrides"]["trainer.max_steps"] == 60 for c in quick)
    assert sum(c["baseline"] for c in full) == 3  # the random-init twin once per seed
    plain = next(c for c in full if c["method"] == "stablerep" and c["seed"] == 0)
    studies = {m["study"] for m in plain["memberships"]}
    assert studies == {"method", "positives", "diversity"}  # shared, trained once
