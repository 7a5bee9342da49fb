"""Start `stablerep` commands as forks of a warm server instead of fresh interpreters.

A fresh `python -m stablerep_pl.cli ...` spends about 5 s importing torch, Lightning (which imports
torchmetrics, torchvision and transformers) and this package before its first step; a sweep of short
cells or a resume check of three short runs is mostly that. Here a multiprocessing forkserver
imports `PRELOAD` once, and each command is a fork of it that runs exactly what
`python -m stablerep_pl.cli ARGV` runs, in its own process: its own working directory, environment,
log file and (optionally) process group, killable with SIGKILL like any process (a Python script can
be run the same way). The server only imports (it never runs a torch operation, and importing
PRELOAD calls no CUDA function: checked), so a fork starts as clean as a fresh interpreter; CUDA is
first initialised in the fork. Ranks that Lightning launches for DDP are fresh interpreters as usual
(`python -m stablerep_pl.cli.__main__ ...`).

What a fork cannot change after the fact: the OpenMP runtime read `OMP_NUM_THREADS` when the server
imported torch, so a thread count in `env` is applied with `torch.set_num_threads`. And
multiprocessing's start method is reset to the platform default in the fork, so DataLoader workers
are the command's own children, in its process group, as in a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import runpy
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

PRELOAD = ["torch", "lightning.pytorch", "stablerep_pl.cli.fit", "stablerep_pl.cli.probe"]
_context: Any = None
_start_lock = threading.Lock()


def available() -> bool:
    """Whether forks can be used here (POSIX); callers fall back to ordinary subprocesses otherwise."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def forkserver() -> Any:
    """The process-wide forkserver context; its server imports `PRELOAD` when it first starts."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


class WarmProcess:
    """A running command: wait, kill (its group when it has its own), exit code, CPU seconds."""

    def __init__(self, process: Any, log: Path, usage: Path, own_group: bool) -> None:
        self.process, self.log, self.usage, self.own_group = process, log, usage, own_group

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """As `subprocess.Popen.returncode`: None while running, -N when killed by signal N."""
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def kill(self) -> None:
        """SIGKILL the command, and everything in its process group if it has its own."""
        if self.process.exitcode is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # it may have just ended
            os.killpg(self.pid, signal.SIGKILL) if self.own_group else os.kill(self.pid, signal.SIGKILL)
        self.process.join()

    def terminate(self) -> None:
        if self.process.exitcode is None:
            self.process.terminate()

    def poll(self) -> int | None:
        return self.process.exitcode

    def cpu_seconds(self) -> float | None:
        """User + system seconds of the command and the children it waited for (None if killed)."""
        if not self.usage.is_file():
            return None
        return json.loads(self.usage.read_text())["cpu"]


def start(
    argv: Sequence[str],
    log: str | Path,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
    inherit_env: bool = True,
    script: str | Path | None = None,
) -> WarmProcess:
    """Run `stablerep ARGV` (e.g. `["fit", "--config", ...]`) in a fork, output to `log`; given
    `script`, run that Python file as `__main__` with ARGV instead (`python SCRIPT ARGV`).

    `env` is applied on top of the server's environment (or replaces it, `inherit_env=False`, so
    that what a launcher left there, e.g. `RANK` or `SLURM_*`, is kept from a run); its `PYTHONPATH`
    reaches `sys.path` as in a fresh interpreter (e.g. for callbacks named by `class_path`), and
    processes the command starts inherit it. `new_session` gives the command its own process group,
    so that it can SIGKILL its group (DDP ranks, data workers) without its caller.
    """
    log = Path(log).absolute()
    log.parent.mkdir(parents=True, exist_ok=True)
    usage = log.with_name(log.name + ".usage.json")
    usage.unlink(missing_ok=True)
    directory = str(Path(cwd).absolute()) if cwd is not None else os.getcwd()
    target = str(Path(script).absolute()) if script is not None else None
    args = (list(argv), str(log), directory, dict(env or {}), inherit_env, new_session, target, str(usage))
    name = Path(target).name if target else f"stablerep {' '.join(argv[:1])}"
    process = forkserver().Process(target=_run, args=args, name=name)
    with _main_module_hidden():
        process.start()
    return WarmProcess(process, log, usage, new_session)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start forks without re-running the caller's `__main__` in them.

    multiprocessing imports the parent's main module into each child (spawn semantics), so that
    targets defined there can be found. `_run` is not defined there, and a caller's script without
    an `if __name__ == "__main__":` guard would run again in every fork; hiding the main module's
    file and spec while the child's preparation data is taken avoids both.
    """
    with _start_lock:
        main = sys.modules["__main__"]
        saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__spec__ = None
        try:
            yield
        finally:
            main.__dict__.update(saved)
            if "__spec__" not in saved:
                del main.__spec__


def _run(
    argv: list[str], log: str, cwd: str, env: dict[str, str], inherit_env: bool, new_session: bool,
    script: str | None, usage: str,
) -> None:  # fmt: skip
    """Inside the fork: become what `python -m stablerep_pl.cli ARGV` (or `python SCRIPT ARGV`)
    would be, then run it."""
    if new_session:
        os.setsid()
    # multiprocessing made the forkserver this process's start method; a fresh interpreter has the
    # platform default, under which DataLoader workers are this process's own children (its group).
    multiprocessing.set_start_method(None, force=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(cwd)
    if not inherit_env:
        os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    # A fresh interpreter's path: the script's folder (the working directory for -m), then PYTHONPATH.
    first = str(Path(script).parent) if script else cwd
    sys.path[:0] = [first, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    try:
        if script:
            sys.argv = [script, *argv]
            runpy.run_path(script, run_name="__main__")
        else:
            sys.argv = ["stablerep", *argv]
            runpy.run_module("stablerep_pl.cli", run_name="__main__", alter_sys=True)
    finally:
        _wait_for_children()
        sys.stdout.flush()
        sys.stderr.flush()
        spent = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        cpu = sum(u.ru_utime + u.ru_stime for u in spent)
        Path(usage).write_text(json.dumps({"cpu": round(cpu, 2)}))


def _wait_for_children() -> None:
    """End when the processes this command started have ended (the DDP ranks Lightning launched
    may still be writing their last files when rank 0 returns), so that waiting for the command
    means waiting for all of it, and their CPU seconds count."""
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()
