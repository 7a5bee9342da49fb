"""Running cells as ordinary subprocesses, `jobs` at a time, and picking up a half-finished sweep.

Each cell is `stablerep fit` then one `stablerep probe` per evaluation set, run exactly as printed
(and stored in the cell's `result.json`), so any cell can be redone by hand; each command is its own
process, forked from a server that imported torch and Lightning once (`stablerep_pl.cli.launch`). A cell is finished when
its `result.json` exists with the current hashes; it is written last, atomically. A fit that
completed leaves `fit_done.json`, so a cell killed while probing re-probes without retraining; a
cell killed while training is wiped and trained again (a partial run is never resumed or reused).

CPU seconds per command are the command's own rusage (with its data workers), unaffected by other jobs:
that, not wall time, is what the budget estimate in the config is made of on a shared machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stablerep_pl.cli import launch
from stablerep_pl.cli.replicate.plan import Cell, probe_command, shell_line
from stablerep_pl.cli.replicate.spec import EvaluationSpec

RESULT = "result.json"
FIT_DONE = "fit_done.json"
_BATCH_LINE = re.compile(r"global batch (\d+) images/step.*?· (\d+) steps \((\d+) warmup")


class CellFailed(RuntimeError):
    """A command of a cell exited with an error; the message names its log."""


_running: set[Any] = set()  # subprocess.Popen or launch.WarmProcess
_lock = threading.Lock()


def write_json(path: Path, payload: Any) -> None:
    """Write-then-rename, so a reader (or a rerun after a kill) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.name


def finished_result(out: Path, cell: Cell) -> dict[str, Any] | None:
    """The cell's result if it was completed with the current fit and evaluation settings."""
    path = cell_dir(out, cell) / RESULT
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if result.get("fit_hash") != cell.fit_hash or result.get("eval_hash") != cell.eval_hash:
        return None
    return result


def run_command(args: list[str], log: Path, env: dict[str, str]) -> dict[str, float]:
    """Run to completion with output to `log`; wall and CPU seconds (user + system of the command).

    `python -m stablerep_pl.cli ...` with this interpreter runs as a fork of `launch`'s warm server
    (the same command, without 5 s of imports); anything else, or where forks are unavailable
    (Windows), as an ordinary subprocess.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log.write_text(shell_line(args) + "\n\n")
    if args[:3] == [sys.executable, "-m", "stablerep_pl.cli"] and launch.available():
        proc: Any = launch.start(args[3:], log, env=env)
        with _lock:
            _running.add(proc)
        try:
            returncode, cpu = proc.wait(), proc.cpu_seconds() or 0.0
        finally:
            with _lock:
                _running.discard(proc)
    else:
        returncode, cpu = _run_subprocess(args, log, env)
    if returncode != 0:
        raise CellFailed(f"exit status {returncode}: {shell_line(args)}\n  log: {log}")
    return {"wall": round(time.perf_counter() - start, 1), "cpu": round(cpu, 1)}


def _run_subprocess(args: list[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    with log.open("a") as handle:
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
        with _lock:
            _running.add(proc)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            with _lock:
                _running.discard(proc)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def stop_running() -> None:
    """Terminate the commands this runner started (on Ctrl-C or SIGTERM)."""
    with _lock:
        procs = list(_running)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()


def read_fit_log(log: Path) -> dict[str, int]:
    """Images per step, steps and warmup as the fit printed them: the equal-compute record."""
    match = _BATCH_LINE.search(log.read_text(errors="replace"))
    if not match:
        return {}
    images, steps, warmup = (int(g) for g in match.groups())
    return {"global_batch_images": images, "total_steps": steps, "warmup_steps": warmup}


def probe_metrics(report: dict[str, Any], set_name: str, column: str) -> tuple[dict, dict]:
    """`{set/evaluation: top1}` and the details (best lr, 95 % CI) of one column of a probe report."""
    metrics, details = {}, {}
    for evaluation, result in report["results"].get(column, {}).items():
        if isinstance(result, dict) and "top1" in result:
            key = f"{set_name}/{evaluation}"
            metrics[key] = result["top1"]
            details[key] = {k: v for k, v in result.items() if k in ("best_lr", "ci95", "k")}
    return metrics, details


def run_cell(
    cell: Cell, out: Path, evaluation: EvaluationSpec, python: str, env: dict[str, str],
    say: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Train (unless a completed fit is on disk), probe every set, write `result.json` last."""
    folder = cell_dir(out, cell)
    fit_done = folder / FIT_DONE
    if not (fit_done.is_file() and json.loads(fit_done.read_text()).get("fit_hash") == cell.fit_hash):
        shutil.rmtree(folder, ignore_errors=True)  # killed mid-training: start this cell afresh
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "cell.json", asdict(cell))
    commands, timings = {"fit": shell_line(cell.fit_command(python, folder))}, {}
    if not fit_done.is_file():
        say(f"{cell.name}: {commands['fit']}")
        timings["fit"] = run_command(cell.fit_command(python, folder), folder / "logs" / "fit.log", env)
        write_json(fit_done, {"fit_hash": cell.fit_hash, "timing": timings["fit"]})
    else:
        timings["fit"] = json.loads(fit_done.read_text())["timing"]
    ckpts = sorted((folder / "fit").rglob("last.ckpt"))
    if not ckpts:
        raise CellFailed(f"{cell.name}: the fit wrote no last.ckpt under {folder / 'fit'}")
    result: dict[str, Any] = {
        "name": cell.name, "method": cell.method, "seed": cell.seed, "fit_hash": cell.fit_hash,
        "eval_hash": cell.eval_hash, "architecture": cell.architecture, "overrides": cell.overrides,
        "memberships": [asdict(m) for m in cell.memberships], "metrics": {}, "details": {},
        "train": read_fit_log(folder / "logs" / "fit.log"), "commands": commands, "timings": timings,
    }  # fmt: skip
    if cell.baseline:
        result["baseline"] = {}
    for set_name in evaluation.sets:
        probe_out = folder / f"probe_{set_name}"
        shutil.rmtree(probe_out, ignore_errors=True)
        args = probe_command(python, cell, ckpts[-1], probe_out, set_name, evaluation)
        commands[f"probe_{set_name}"] = shell_line(args)
        say(f"{cell.name}: {commands[f'probe_{set_name}']}")
        timings[f"probe_{set_name}"] = run_command(args, folder / "logs" / f"probe_{set_name}.log", env)
        report = json.loads((probe_out / "results.json").read_text())
        metrics, details = probe_metrics(report, set_name, "trained")
        result["metrics"].update(metrics)
        result["details"].update(details)
        if cell.baseline:
            result["baseline"].update(probe_metrics(report, set_name, "random_init")[0])
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(folder / RESULT, result)
    return result


def run_cells(
    cells: list[Cell], out: Path, evaluation: EvaluationSpec, jobs: int, python: str,
    env: dict[str, str], say: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    """Finished results of every cell (skipping those already done) and the failures' messages."""
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for cell in cells:
        done = finished_result(out, cell)
        if done is not None:
            results[cell.name] = done
        else:
            todo.append(cell)
    say(f"{len(cells)} cells: {len(results)} finished, {len(todo)} to run, {jobs} at a time")
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_cell, c, out, evaluation, python, env, say): c for c in todo}
        try:
            for count, future in enumerate(as_completed(futures), 1):
                cell = futures[future]
                try:
                    result = future.result()
                except CellFailed as err:
                    failures.append(str(err))
                    say(f"[{count}/{len(todo)}] FAILED {cell.name}: {err}")
                    continue
                results[cell.name] = result
                seconds = sum(t["cpu"] for t in result["timings"].values())
                say(f"[{count}/{len(todo)}] done {cell.name} ({seconds:.0f} CPU s)")
        except BaseException:
            for future in futures:
                future.cancel()
            stop_running()
            raise
    return [results[c.name] for c in cells if c.name in results], failures
