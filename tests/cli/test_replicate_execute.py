"""`replicate.execute.run_command`: a `python -m stablerep_pl.cli` command runs as a warm fork, anything
else (or everything where forks are unavailable) as a subprocess; both log the command line first,
then the output, count CPU seconds, and fail with the log's path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from stablerep_pl.cli import launch
from stablerep_pl.cli.replicate.execute import CellFailed, run_command

START = launch.start  # the real one, wrapped below to see whether it was used


@pytest.mark.parametrize("forks", [True, False])
def test_a_cli_command_is_logged_and_timed_either_way(tmp_path: Path, forks: bool, monkeypatch) -> None:
    monkeypatch.setattr(launch, "available", lambda: forks)
    started = []
    monkeypatch.setattr(launch, "start", lambda *a, **k: started.append(a) or START(*a, **k))
    log = tmp_path / "help.log"
    timing = run_command([sys.executable, "-m", "stablerep_pl.cli", "--help"], log, dict(os.environ))
    text = log.read_text()
    assert text.startswith(f"{sys.executable} -m stablerep_pl.cli --help\n\n") and "usage: stablerep" in text
    assert timing["wall"] >= 0 and timing["cpu"] >= 0
    assert bool(started) == forks


def test_other_commands_run_as_subprocesses_and_failures_name_the_log(tmp_path: Path) -> None:
    log = tmp_path / "ok.log"
    run_command([sys.executable, "-c", "print('from a subprocess')"], log, dict(os.environ))
    assert log.read_text().endswith("from a subprocess\n")
    bad = tmp_path / "bad.log"
    with pytest.raises(CellFailed, match=r"(?s)exit status 3:.*log: .*bad\.log"):
        run_command([sys.executable, "-c", "raise SystemExit(3)"], bad, dict(os.environ))
    with pytest.raises(CellFailed, match=r"exit status [1-9]"):  # a failing fork: its status, its log
        run_command([sys.executable, "-m", "stablerep_pl.cli", "fit", "--data.init_args.views=x"],
                    tmp_path / "views.log", dict(os.environ))  # fmt: skip
    assert "error" in (tmp_path / "views.log").read_text().lower()
