"""check_output_dirs: an unusable output directory fails before training, in one line naming the setting.

Tests may run as root, where a chmod-ed directory is still writable; unwritable locations here are a
path under a regular file and /proc (the chmod case runs only for other users).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from stablerep_pl.callbacks.output_dirs import OutputDirectoryError, check_output_dirs, output_dirs


def trainer(root: Path, logs: Path, checkpoints: Path | None) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root,
        logger=TensorBoardLogger(save_dir=logs, name="run"),
        callbacks=[ModelCheckpoint(dirpath=checkpoints)],
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
    )


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_writable_directories_pass_and_nothing_is_created(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    t = trainer(tmp_path / "a" / "b", tmp_path / "logs", tmp_path / "ckpt")
    before = tree(tmp_path)
    check_output_dirs(t)
    assert tree(tmp_path) == before
    assert output_dirs(t) == [
        ("trainer.default_root_dir", str(tmp_path / "a" / "b")),
        ("TensorBoardLogger save_dir", str(tmp_path / "logs")),
        ("TensorBoardLogger log_dir", str(tmp_path / "logs" / "run" / "version_0")),
        ("ModelCheckpoint dirpath", str(tmp_path / "ckpt")),
    ]


@pytest.mark.parametrize("setting", ["root", "logs", "checkpoints"])
def test_a_path_under_a_file_fails_naming_the_setting(tmp_path: Path, setting: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    paths = {"root": tmp_path / "root", "logs": tmp_path / "logs", "checkpoints": tmp_path / "ckpt"}
    paths[setting] = blocker / "sub"
    with pytest.raises(OutputDirectoryError) as error:
        check_output_dirs(trainer(paths["root"], paths["logs"], paths["checkpoints"]))
    message = str(error.value)
    assert "\n" not in message and f"{blocker} is a file, not a directory" in message
    expected = {
        "root": "trainer.default_root_dir",
        "logs": "TensorBoardLogger save_dir",
        "checkpoints": "dirpath",
    }
    assert f"{expected[setting]} {blocker / 'sub'}" in message


def test_proc_is_not_writable(tmp_path: Path) -> None:
    with pytest.raises(
        OutputDirectoryError, match=r"ModelCheckpoint dirpath /proc/stablerep/ckpt: cannot create"
    ):
        check_output_dirs(trainer(tmp_path, tmp_path, Path("/proc/stablerep/ckpt")))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through chmod")
def test_a_read_only_directory_fails(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        logger = CSVLogger(save_dir=read_only / "logs")
        t = L.Trainer(default_root_dir=tmp_path, logger=logger, accelerator="cpu", devices=1)
        with pytest.raises(OutputDirectoryError, match="CSVLogger save_dir"):
            check_output_dirs(t)
    finally:
        read_only.chmod(0o755)


def test_remote_paths_are_not_probed(tmp_path: Path) -> None:
    t = trainer(tmp_path, tmp_path, None)
    t.callbacks.append(ModelCheckpoint(dirpath="memory://bucket/ckpt"))
    check_output_dirs(t)
    assert "memory" not in str(output_dirs(t))
