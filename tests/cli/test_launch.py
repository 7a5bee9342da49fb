"""`stablerep_pl.cli.launch`: commands forked from a warm server behave like fresh processes.

Checked here: output, exit status, working directory, environment and CPU seconds of a fork; a
failing command's status and message; SIGKILL of a fork's own process group takes its DataLoader
workers with it (they are its children, not the server's); a caller's unguarded script is not rerun
in the forks. Bit-identical training in forks is checked by every case of `test_exact_resume.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stablerep_pl.cli import launch

ROOT = Path(__file__).resolve().parents[2]
QUICK = [
    "fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--trainer.callbacks=[]", "--trainer.logger=false",
    "--data.init_args.num_captions=32", "--data.init_args.batch_size=8",
]  # fmt: skip

CHECKPOINT = '{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": "here", "save_last": true}}'


def test_a_fork_runs_the_command_in_its_folder_with_its_environment(tmp_path: Path) -> None:
    process = launch.start(
        [*QUICK, "--data.init_args.num_workers=0", "--trainer.max_steps=2", f"--trainer.callbacks+={CHECKPOINT}"],
        tmp_path / "logs" / "fit.log", cwd=tmp_path, env={"STABLEREP_LAUNCH_TEST": "yes", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert process.wait(120) == 0, process.log.read_text()[-3000:]
    assert (tmp_path / "here" / "last.ckpt").is_file()  # a relative path is the fork's own cwd
    assert "global batch" in process.log.read_text()  # the command's own output is in its log
    assert process.cpu_seconds() > 0
    assert "STABLEREP_LAUNCH_TEST" not in os.environ  # the caller's environment is untouched


def test_a_failing_command_reports_its_status_and_message(tmp_path: Path) -> None:
    process = launch.start([*QUICK, "--data.init_args.views=11"], tmp_path / "bad.log", cwd=tmp_path)
    assert process.wait(120) not in (0, None)
    assert "views" in process.log.read_text()


def _group_members(pgid: int) -> set[int]:
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.add(int(stat.parent.name))
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_killing_its_group_takes_its_data_workers_with_it(tmp_path: Path) -> None:
    process = launch.start(
        [*QUICK, "--data.init_args.num_workers=2", "--trainer.max_steps=100000"],
        tmp_path / "long.log", cwd=tmp_path, new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(_group_members(process.pid)) < 3:  # the fork and its two workers
        assert process.poll() is None, process.log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.2)
    workers = _group_members(process.pid) - {process.pid}
    parents = {int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in workers}
    assert parents == {process.pid}  # the fork's own children, not the server's
    process.kill()
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while _group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_members(process.pid)


def test_an_unguarded_caller_script_is_not_rerun_in_forks(tmp_path: Path) -> None:
    marker = tmp_path / "imports.txt"
    script = tmp_path / "caller.py"
    script.write_text(
        "from pathlib import Path\n"
        "from stablerep_pl.cli import launch\n"
        f"with open({str(marker)!r}, 'a') as f:\n    f.write('ran\\n')\n"
        f"p = launch.start(['--help'], {str(tmp_path / 'help.log')!r})\n"
        "assert p.wait(120) == 0\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=180)
    assert marker.read_text() == "ran\n"
    assert "usage: stablerep" in (tmp_path / "help.log").read_text()
