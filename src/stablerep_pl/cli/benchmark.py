"""`stablerep benchmark --config X.yaml [fit options]`: where the time of a training step goes.

Measures, for the given fit config, (a) the input pipeline alone (images/s out of the data module,
workers as configured), (b) the model step alone on synthetic tensors of the same shape (forward +
backward + optimiser: images/s, peak memory, FLOPs and MFU where the device's peak is known), and
(c) the full training step as `stablerep fit` runs it; then names the bound: input, compute,
overhead, or on a CPU device the cores that input and model share, and what would change it. Every
`stablerep fit` option is accepted (overrides after the config); the benchmark's own options are
`--benchmark.*`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from stablerep_pl.callbacks.monitoring import TorchThreads
from stablerep_pl.cli.errors import SubcommandParser
from stablerep_pl.cli.throughput import Measurement, measure_fit, measure_input, measure_model
from stablerep_pl.distributed.host_memory import host_memory_kept

EXAMPLE = (
    "stablerep benchmark --config configs/quickstart.yaml --benchmark.steps 20 --benchmark.json bench.json"
)
OVERHEAD_TOLERANCE = 0.9  # the full step may lose 10 % to the framework before it is the bound


def build_parser() -> SubcommandParser:
    parser = SubcommandParser(prog="stablerep benchmark", description=__doc__, example=EXAMPLE)
    parser.add_argument("--benchmark.steps", type=int, default=20, help="timed steps of each measurement")
    parser.add_argument("--benchmark.warmup", type=int, default=5, help="untimed steps before each")
    parser.add_argument("--benchmark.json", type=str | None, default=None, help="also write the results here")
    return parser


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(`--benchmark.*` options, everything else for `stablerep fit`)."""
    ours, fit, take_next = [], [], False
    for arg in argv:
        if take_next:
            ours.append(arg)
            take_next = False
        elif arg.startswith("--benchmark.") or arg in ("-h", "--help"):
            ours.append(arg)
            take_next = "=" not in arg and arg not in ("-h", "--help")
        else:
            fit.append(arg)
    return ours, fit


def verdict(
    data: Measurement,
    model: Measurement,
    full: Measurement,
    workers: int,
    mode: str | None,
    device_type: str = "cuda",
) -> str:
    """One line: which of input, compute or framework overhead bounds the full step, and the fix.

    On a CPU device the input workers and the model step run on the same cores: each measured alone
    had all of them, so together the full step can fall to the serial rate 1/(1/input + 1/model)
    without any framework overhead. That case is named `cpu-shared`, not overhead.
    """
    ceiling = min(data.images_per_s, model.images_per_s)
    if full.images_per_s < OVERHEAD_TOLERANCE * ceiling:
        serial = 1 / (1 / data.images_per_s + 1 / model.images_per_s)
        if device_type == "cpu" and full.images_per_s >= OVERHEAD_TOLERANCE * serial:
            lighter = ["augmentation_mode: batched"] if mode == "per_image" else []
            lighter.append("cheaper rendering or a smaller model")
            return (f"cpu-shared: the input ({data.images_per_s:.0f} img/s alone) and the model step "
                    f"({model.images_per_s:.0f} alone) share the CPU's {os.cpu_count() or 1} cores; one after "
                    f"the other they would give {serial:.0f} img/s and the full step reaches "
                    f"{full.images_per_s:.0f}; less CPU per image helps ({'; '.join(lighter)}); on an "
                    "accelerator, rerun there")  # fmt: skip
        lost = 100 * (1 - full.images_per_s / ceiling)
        return (f"overhead-bound: the full step reaches {full.images_per_s:.0f} img/s, {lost:.0f} % below both the "
                f"input ({data.images_per_s:.0f}) and the model ({model.images_per_s:.0f}); look at logging, "
                "callbacks and synchronisation per step (benchmarks/overhead.py)")  # fmt: skip
    if data.images_per_s < model.images_per_s:
        cores = os.cpu_count() or 1
        need = workers * model.images_per_s / data.images_per_s if workers else float("inf")
        fix = [
            f"num_workers {workers} → {min(cores, max(workers + 1, round(need)))}" if workers < cores else ""
        ]
        if mode and mode != "on_device":
            fix.append("augmentation_mode: on_device (the colour half on the accelerator)")
        if mode == "per_image":
            fix.append("augmentation_mode: batched")
        suggestion = "; or ".join(f for f in fix if f) or "a faster data source (more cores, local shards)"
        return (f"input-bound: the data module delivers {data.images_per_s:.0f} img/s, the model could take "
                f"{model.images_per_s:.0f}; try {suggestion}")  # fmt: skip
    return (f"compute-bound: the model step takes {model.images_per_s:.0f} img/s and the input keeps up "
            f"({data.images_per_s:.0f}); more input workers would not help")  # fmt: skip


def first_batch(datamodule: Any) -> dict[str, Any]:
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def apply_thread_settings(trainer: Any) -> int:
    """The training process's torch threads as the fit will set them (a `TorchThreads` callback sets
    them at setup), so the input and model measurements run under the same count as the full step."""
    for callback in trainer.callbacks:
        if isinstance(callback, TorchThreads):
            callback.apply()
    return torch.get_num_threads()


def run(fit_args: list[str], steps: int, warmup: int) -> dict[str, Any]:
    from stablerep_pl.cli.fit import StableRepCLI

    def build() -> Any:
        return StableRepCLI(args=fit_args, run=False)

    cli = build()
    threads = apply_thread_settings(cli.trainer)
    data = measure_input(cli.datamodule, steps, warmup)
    device = cli.trainer.strategy.root_device
    precision = str(cli.trainer.precision)
    model = measure_model(cli.model, first_batch(cli.datamodule), device, precision, steps, warmup)
    cli = build()  # fresh weights, data and trainer for the real thing
    full = measure_fit(cli.trainer, cli.model, cli.datamodule, steps, warmup)
    dm = cli.datamodule
    workers = int(getattr(dm, "num_workers", 0))
    mode = getattr(dm, "augmentation_mode", None)
    return {
        "device": str(device), "precision": precision, "num_workers": workers, "augmentation_mode": mode,
        "torch_threads": threads, "freed_host_memory_kept": host_memory_kept(),
        "input": asdict(data), "model": asdict(model), "full": asdict(full),
        "verdict": verdict(data, model, full, workers, mode, device.type),
    }  # fmt: skip


def format_report(report: dict[str, Any]) -> str:
    model = report["model"]["extra"]
    mfu = "n/a (no known peak for this device)" if model["mfu"] is None else f"{100 * model['mfu']:.1f} %"
    rows = [
        ("input pipeline alone", report["input"]),
        ("model step alone", report["model"]),
        ("full training step", report["full"]),
    ]
    memory = "freed host memory kept" if report["freed_host_memory_kept"] else "malloc defaults"
    lines = [f"device {report['device']} · precision {report['precision']} · {report['torch_threads']} torch "
             f"threads · {report['num_workers']} workers · augmentation {report['augmentation_mode']} · {memory}",
             f"{'':<24}{'images/s':>12}{'ms/step':>12}"]  # fmt: skip
    lines += [
        f"{name:<24}{m['images_per_s']:>12.1f}{1000 * m['seconds_per_step']:>12.1f}" for name, m in rows
    ]
    lines.append(f"model: {model['tflops_per_s']:.3f} TFLOP/s, MFU {mfu}, peak memory "
                 f"{model['peak_memory_bytes'] / 2**20:.0f} MiB ({model['peak_memory_kind']})")  # fmt: skip
    lines.append(report["verdict"])
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    ours, fit_args = split_args(argv)
    options = build_parser().parse_args(ours)
    steps, warmup = options["benchmark.steps"], options["benchmark.warmup"]
    if steps < 1 or warmup < 1:
        raise ValueError(f"--benchmark.steps and --benchmark.warmup must be >= 1, got {steps} and {warmup}")
    report = run(fit_args, steps, warmup)
    print(format_report(report), flush=True)
    if options["benchmark.json"]:
        Path(options["benchmark.json"]).write_text(json.dumps(report, indent=2))
    sys.stdout.flush()
    return report
