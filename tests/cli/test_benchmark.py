"""`stablerep benchmark`: the three measurements on the quickstart at reduced size, the verdict rules."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stablerep_pl.callbacks.monitoring import TorchThreads
from stablerep_pl.cli import main
from stablerep_pl.cli.benchmark import apply_thread_settings, split_args, verdict
from stablerep_pl.cli.throughput import Measurement
from stablerep_pl.distributed.host_memory import host_memory_kept

ROOT = Path(__file__).resolve().parents[2]


def m(images_per_s: float) -> Measurement:
    return Measurement(images_per_s, 1 / images_per_s, 10)


def test_verdicts_name_the_bound_and_the_fix(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert verdict(m(100), m(400), m(95), workers=1, mode="per_image").startswith("input-bound")
    assert "num_workers 1 → 4" in verdict(m(100), m(400), m(95), workers=1, mode="per_image")  # 4× the input
    assert "augmentation_mode: on_device" in verdict(m(100), m(400), m(95), workers=1, mode="batched")
    assert verdict(m(400), m(100), m(95), workers=2, mode="batched").startswith("compute-bound")
    assert verdict(m(400), m(100), m(60), workers=2, mode="batched").startswith("overhead-bound")


def test_on_cpu_input_and_model_sharing_the_cores_is_not_called_overhead(monkeypatch) -> None:
    # Measured alone, the input (852 img/s) and the model (1368) each had both cores; together they
    # share them, so the full step lies between the serial rate 1/(1/852 + 1/1368) = 525 and 852.
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    shared = verdict(m(852), m(1368), m(709), workers=1, mode="per_image", device_type="cpu")
    assert shared.startswith("cpu-shared") and "525" in shared and "augmentation_mode: batched" in shared
    # Below even the serial rate it is overhead; on an accelerator the cores are not shared.
    assert verdict(m(852), m(1368), m(400), 1, "per_image", device_type="cpu").startswith("overhead-bound")
    assert verdict(m(852), m(1368), m(709), 1, "per_image", device_type="cuda").startswith("overhead-bound")


def test_benchmark_options_are_separated_from_fit_options() -> None:
    ours, fit = split_args(
        ["--config", "a.yaml", "--benchmark.steps", "3", "--benchmark.json=x.json", "--trainer.max_steps=4"]
    )
    assert ours == ["--benchmark.steps", "3", "--benchmark.json=x.json"]
    assert fit == ["--config", "a.yaml", "--trainer.max_steps=4"]


@pytest.mark.slow
def test_benchmark_on_the_quickstart_at_reduced_size(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    report = main(["benchmark", "--config", str(ROOT / "configs/quickstart.yaml"), "--data.init_args.num_captions=64",
                   "--data.init_args.batch_size=8", "--data.init_args.num_workers=0", "--trainer.callbacks=[]",
                   "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}", "--benchmark.steps=3",
                   "--benchmark.warmup=1", f"--benchmark.json={out}"])  # fmt: skip
    saved = json.loads(out.read_text())
    for part in ("input", "model", "full"):
        assert saved[part]["images_per_s"] > 0 and saved[part]["steps"] == 3
    assert saved["model"]["extra"]["flops_per_step"] > 0 and saved["model"]["extra"]["mfu"] is None  # CPU
    assert saved["verdict"].split(":")[0] in {"input-bound", "compute-bound", "overhead-bound", "cpu-shared"}
    assert saved["freed_host_memory_kept"] is host_memory_kept()  # applied by `stablerep` (tested apart)
    printed = capsys.readouterr().out
    assert "input pipeline alone" in printed and saved["verdict"] in printed
    assert ("freed host memory kept" if saved["freed_host_memory_kept"] else "malloc defaults") in printed
    assert report is None or report["verdict"] == saved["verdict"]


def test_input_and_model_are_measured_under_the_runs_torch_threads() -> None:
    # The quickstart's TorchThreads(1) takes effect at fit setup; measured without it, the model
    # step alone ran on every core and looked 1.6x faster than it is inside the fit.
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    try:
        trainer = SimpleNamespace(callbacks=[TorchThreads(num_threads=wanted)])
        assert apply_thread_settings(trainer) == wanted == torch.get_num_threads()
        assert apply_thread_settings(SimpleNamespace(callbacks=[])) == wanted  # no callback: unchanged
    finally:
        torch.set_num_threads(before)
