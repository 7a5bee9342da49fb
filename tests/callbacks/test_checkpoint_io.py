"""AtomicCheckpointIO: a process killed while writing a checkpoint leaves the previous one loadable.

The kill test runs a real writer process (tests/checkpoint_io_writer.py) that saves a 160 MB
checkpoint to one path over and over, waits until some file in the checkpoint directory is partially
written, freezes the writer (SIGSTOP), checks the write is still in progress, and SIGKILLs it. The
writer's $TMPDIR is on another filesystem (/dev/shm), as on clusters with node-local /tmp and shared
checkpoint storage: there Lightning's default TorchCheckpointIO copies its temporary onto the target
in place, and the same test leaves a truncated `last.ckpt` (the `lightning` case, expected to fail).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.plugins.io import TorchCheckpointIO

from stablerep_pl.callbacks.checkpoint_io import (
    AtomicCheckpointIO,
    remove_stale_temporaries,
    temporary_prefix,
)

HERE = Path(__file__).resolve().parent
WRITER = HERE / "checkpoint_io_writer.py"
MEGABYTES = 160
SHM = Path("/dev/shm")


def read_progress(progress: Path) -> list[int]:
    return [int(line) for line in progress.read_text().split()] if progress.exists() else []


def kill_during_a_write(
    proc: subprocess.Popen, directory: Path, progress: Path, timeout: float = 120
) -> Path:
    """SIGKILL `proc` while a file in `directory` is partially written; return that file."""
    full_size, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"writer exited early ({proc.returncode}): {proc.communicate()[0]}")
        if full_size is None:  # the size of one complete save, measured once the first one is done
            if read_progress(progress):
                full_size = (directory / "last.ckpt").stat().st_size
            continue
        for path in directory.iterdir():
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # renamed away between listing and stat
                continue
            if path == progress or not 0 < size < full_size:
                continue
            os.kill(proc.pid, signal.SIGSTOP)
            try:  # frozen: is the write still in progress, or did it finish in the meantime?
                still_partial = path.exists() and path.stat().st_size < full_size
            except FileNotFoundError:
                still_partial = False
            if still_partial:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return path
            os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    pytest.fail("never observed a partially written checkpoint")


@pytest.mark.slow
@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm as a second filesystem for $TMPDIR")
@pytest.mark.parametrize(
    "kind",
    [
        "atomic",
        pytest.param(
            "lightning",
            marks=pytest.mark.xfail(
                raises=RuntimeError, reason="Lightning's default copies onto the target across filesystems"
            ),
        ),
    ],
)
def test_sigkill_during_a_save_leaves_the_previous_checkpoint(tmp_path: Path, kind: str) -> None:
    directory, progress = tmp_path / "ckpt", tmp_path / "progress.txt"
    directory.mkdir()
    tmpdir = SHM / f"stablerep-test-{os.getpid()}-{kind}"
    tmpdir.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "PYTHONPATH": str(HERE.parent / "src"),
        "OMP_NUM_THREADS": "1",
    }
    target = directory / "last.ckpt"
    args = [sys.executable, str(WRITER), kind, str(target), str(progress), str(MEGABYTES)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        partial = kill_during_a_write(proc, directory, progress)
    finally:
        if proc.poll() is None:
            proc.kill()
        for leftover in tmpdir.iterdir():  # Lightning's temporaries, never removed after a kill
            leftover.unlink()
        tmpdir.rmdir()
    last_complete = read_progress(progress)[-1]
    loaded = torch.load(target, weights_only=True)  # a truncated file raises here
    assert int(loaded["marker"]) == last_complete
    assert torch.equal(loaded["weights"], torch.full((MEGABYTES * 2**18,), float(last_complete)))
    assert partial != target  # the write in progress was a temporary, never the checkpoint

    # The next save removes the killed save's temporary and replaces the checkpoint.
    AtomicCheckpointIO().save_checkpoint({"marker": torch.tensor(-1)}, target)
    assert sorted(p.name for p in directory.iterdir()) == ["last.ckpt"]
    assert int(torch.load(target, weights_only=True)["marker"]) == -1


def test_a_save_keeps_lightnings_file_mode_and_content(tmp_path: Path) -> None:
    state = {"weights": torch.arange(6.0).reshape(2, 3), "step": 3}
    ours, theirs = tmp_path / "ours" / "a.ckpt", tmp_path / "theirs" / "a.ckpt"
    AtomicCheckpointIO().save_checkpoint(state, ours)  # creates the directory, like Lightning's
    TorchCheckpointIO().save_checkpoint(state, theirs)
    assert ours.stat().st_mode == theirs.stat().st_mode
    loaded = AtomicCheckpointIO().load_checkpoint(ours)
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["step"] == 3
    assert sorted(p.name for p in ours.parent.iterdir()) == ["a.ckpt"]


def test_file_urls_are_local_and_remote_paths_use_lightnings_save(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"x": torch.ones(2)}, "memory://stablerep-test/last.ckpt")  # fsspec's in-memory fs
    assert torch.equal(io.load_checkpoint("memory://stablerep-test/last.ckpt")["x"], torch.ones(2))
    # storage_options, remote or local: whatever Lightning's own save does (it refuses them), ours does,
    # and a local target is not written by the atomic path behind Lightning's back.
    for path in ("memory://stablerep-test/x.ckpt", str(tmp_path / "x.ckpt")):
        outcomes = []
        for plugin in (io, TorchCheckpointIO()):
            try:
                plugin.save_checkpoint({"x": torch.ones(2)}, path, storage_options={"a": 1})
                outcomes.append(None)
            except Exception as error:  # the class name aside, the same error as Lightning's
                outcomes.append((type(error), str(error).replace(type(plugin).__name__, "CheckpointIO")))
        assert outcomes[0] == outcomes[1] and outcomes[0] is not None, path
    assert not list(tmp_path.iterdir())


def test_file_url_is_saved_atomically(tmp_path: Path) -> None:
    AtomicCheckpointIO().save_checkpoint({"x": torch.ones(2)}, f"file://{tmp_path}/c.ckpt")
    assert torch.equal(torch.load(tmp_path / "c.ckpt", weights_only=True)["x"], torch.ones(2))


def test_only_temporaries_of_the_same_target_are_stale(tmp_path: Path) -> None:
    target, other = tmp_path / "last.ckpt", tmp_path / "epoch=0-step=4.ckpt"
    stale = tmp_path / f"{temporary_prefix(target)}123-0123abcd"
    kept = [tmp_path / f"{temporary_prefix(other)}123-0123abcd", tmp_path / "notes.txt", other]
    for path in [stale, *kept]:
        path.write_bytes(b"x")
    remove_stale_temporaries(target)
    assert not stale.exists() and all(p.exists() for p in kept)
    assert "last" not in stale.name and not stale.name.endswith(".ckpt")


def test_a_trainer_saves_and_resumes_through_it(tmp_path: Path) -> None:
    def trainer(steps: int) -> L.Trainer:
        return L.Trainer(
            default_root_dir=tmp_path, max_steps=steps, accelerator="cpu", devices=1, logger=False,
            enable_progress_bar=False, enable_model_summary=False, plugins=[AtomicCheckpointIO()],
            callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)],
        )  # fmt: skip

    trainer(2).fit(BoringModel())
    assert int(torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"]) == 2
    resumed = trainer(3)
    resumed.fit(BoringModel(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.global_step == 3
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]
