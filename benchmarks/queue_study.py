"""What a memory queue of 4096 images buys at a small batch: the procedural quickstart, four ways.

Every run is `stablerep fit --config configs/quickstart.yaml` as it was when measured (`STUDY`: fp32,
per-image augmentation, resnet10t at 32 px, 64 captions × 4 views = 256 images/step, seed 0, 768
steps = 12 epochs) with the same data, schedule and online probes; only the candidates of each
anchor change:

- plain:          StableRep, the 255 other images of the global batch;
- queue:          + the 4096 images of the last 16 steps, detached online projections;
- queue_momentum: the batch's and the last 16 steps' momentum-encoder (m = 0.99) keys (MoCo);
- momentum_only:  the batch's momentum keys, no queue (what the momentum encoder alone does).

Runs go one after another (the machine is shared), each in a fresh process on a snapshot of the
package. Reported: the online linear-probe and kNN top-1 at the end (RunSummary), the validation loss
on 128 held-out captions (the plain multi-positive loss in every run: the queue is not used in eval
mode, so it is comparable), the median training time per step (from the logged batches/s, so
evaluations are not counted) and the wall time of the whole run (including 4 probe/kNN evaluations
and 3 validations). `--step-times N` instead times N training steps per run on a fixed batch, the runs
taking turns step by step.

    python benchmarks/queue_study.py                     # all four, ~35 min on 2 CPU cores
    python benchmarks/queue_study.py --runs plain queue --max-steps 256
    python benchmarks/queue_study.py --step-times 20

Measured on this project's shared 2-core CPU machine (768 steps each, seed 0; random init: linear
20.4 %, kNN 12.9 %). s/step and wall time vary with the machine's load (another job ran beside the
last two); the interleaved `--step-times 20` gave plain 302 ms, queue 314, queue_momentum 419,
momentum_only 412 ms per step.

| run | linear probe top-1 | kNN top-1 | val loss | s/step | wall time |
|---|---|---|---|---|---|
| plain | 49.6 % | 36.0 % | 4.348 | 0.480 | 7 min 34 s |
| queue | 17.1 % | 15.0 % | 5.505 | 0.420 | 6 min 0 s |
| queue_momentum | 29.8 % | 17.9 % | 4.653 | 0.915 | 12 min 21 s |
| momentum_only | 35.4 % | 17.3 % | 4.473 | 0.671 | 9 min 19 s |

At this length the queue buys nothing: without momentum the network learns nothing (the loss stays
at log(#candidates)); with momentum most of the loss comes from the lagging keys (README, "Small
batches: a memory queue").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUEUE = ["--config", str(ROOT / "configs/stablerep/quickstart_queue.yaml")]
RUNS = {
    "plain": [],
    "queue": [*QUEUE, "--model.init_args.momentum=null"],
    "queue_momentum": [*QUEUE, "--model.init_args.momentum=0.99"],
    # the momentum encoder alone (its keys are the batch's candidates, no queue): separates what the
    # queue does from what the slower-moving keys do
    "momentum_only": [*QUEUE, "--model.init_args.momentum=0.99", "--model.init_args.queue_size=0"],
}
# The quickstart as this study measured it, before the quickstart itself went bf16, channels_last,
# batched augmentation and 20 epochs: the recorded numbers stay reproducible.
STUDY = ["--trainer.max_epochs=12", "--trainer.precision=32-true", "--data.init_args.augmentation_mode=per_image",
         "--model.init_args.backbone.init_args.channels_last=false"]  # fmt: skip
SUMMARY_LINE = re.compile(r"^\s+(\S+): top-1 ([\d.]+)%", re.MULTILINE)


def scalars(log_dir: Path) -> dict[str, list[float]]:
    """Every scalar the run logged to TensorBoard, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run(name: str, out: Path, quickstart: Path, max_steps: int | None) -> dict:
    """One `stablerep fit` in a fresh process; its summary numbers, s/step and wall time."""
    args = [sys.executable, "-m", "stablerep_pl.cli", "fit", "--config", str(quickstart), *STUDY, *RUNS[name]]
    args += [f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}"]
    if max_steps is not None:
        args.append(f"--trainer.max_steps={max_steps}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(out / "src")}  # the snapshot
    load_before = os.getloadavg()[1]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed, see {out / f'{name}.log'}:\n{proc.stderr[-3000:]}")
    top1 = {key: float(value) for key, value in SUMMARY_LINE.findall(proc.stdout)}
    log_dir = max((out / name).glob("version_*"), key=lambda p: p.stat().st_mtime)
    logged = scalars(log_dir)
    per_sec = next((v for k, v in logged.items() if k.endswith("batches_per_sec")), [])
    return {
        "run": name,
        "top1": top1,
        "val_loss": logged.get("val/loss", [float("nan")])[-1],
        "s_per_step": 1.0 / statistics.median(per_sec) if per_sec else float("nan"),
        "wall_s": wall,
        "load_5min": (load_before, os.getloadavg()[1]),  # the machine is shared: other jobs skew times
    }


def step_times(quickstart: Path, rounds: int) -> dict[str, float]:
    """Median seconds of one training step (forward, backward, AdamW, momentum update) per run, on a
    fixed random batch of 64 × 4 images and a full queue, no data loading. The runs take turns step by
    step, so load from other jobs on a shared machine hits all of them alike."""
    import torch

    from stablerep_pl.cli import StableRepCLI

    torch.set_num_threads(1)  # as the quickstart's TorchThreads callback
    quiet = ["--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false"]
    models, optimizers, times = {}, {}, {}
    for name in RUNS:
        args = ["--config", str(quickstart), *STUDY, *RUNS[name], *quiet]
        model = StableRepCLI(args=args, run=False).model.train()
        if hasattr(model.loss, "enqueue"):  # steady state: the queue full
            size, dim = model.loss.queue_features.shape
            model.loss.enqueue(
                torch.nn.functional.normalize(torch.randn(size, dim), dim=1), torch.arange(size)
            )
        models[name], times[name] = model, []
        optimizers[name] = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    batch = {"images": torch.randn(64, 4, 3, 32, 32), "caption_ids": torch.arange(64)}
    for step in range(rounds + 2):  # 2 warm-up rounds
        for name, model in models.items():
            start = time.perf_counter()
            optimizers[name].zero_grad()
            model.compute_losses(batch)["loss"].backward()
            optimizers[name].step()
            if getattr(model, "momentum", None) is not None:
                model.momentum_update()
            if step >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def table(results: list[dict]) -> str:
    probes = sorted({key for r in results for key in r["top1"]})
    head = ["run", *(f"{p} top-1" for p in probes), "val loss", "s/step", "wall time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        minutes, seconds = divmod(round(r["wall_s"]), 60)
        cells = [r["run"], *(f"{r['top1'].get(p, float('nan')):.1f} %" for p in probes)]
        cells += [f"{r['val_loss']:.3f}", f"{r['s_per_step']:.3f}", f"{minutes} min {seconds:02d} s"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--max-steps", type=int, default=None, help="fewer steps (default: 12 epochs)")
    parser.add_argument("--step-times", type=int, default=0, metavar="ROUNDS",
                        help="only time training steps, interleaved, ROUNDS steps per run")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "runs/queue_study")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # Every run reads one copy of the quickstart config and of the package, taken now: the same code
    # and settings for all of them even if the working tree is edited while the study runs.
    quickstart = args.out / "quickstart.yaml"
    shutil.copy(ROOT / "configs/quickstart.yaml", quickstart)
    shutil.rmtree(args.out / "src", ignore_errors=True)
    shutil.copytree(ROOT / "src", args.out / "src", ignore=shutil.ignore_patterns("__pycache__"))
    if args.step_times:
        sys.path.insert(0, str(args.out / "src"))
        print(json.dumps(step_times(quickstart, args.step_times)))
        return
    results = []
    for name in args.runs:  # one after another: parallel runs would share the cores and skew times
        results.append(run(name, args.out, quickstart, args.max_steps))
        print(json.dumps(results[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
