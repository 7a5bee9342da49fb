"""Fail before training, not at the first checkpoint hours later, when an output directory is unusable.

A run writes to `trainer.default_root_dir`, its loggers' `save_dir`/`log_dir` and its checkpoint
callbacks' `dirpath`. Lightning creates them lazily, so a typo or a read-only mount surfaces only at
the first log or checkpoint. `check_output_dirs` probes each one by creating (and removing) a
directory in it, or in its nearest existing ancestor when it does not exist yet: it leaves nothing
behind and, unlike `os.access`, is also right for root, ACLs and read-only mounts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from stablerep_pl.callbacks.checkpoint_io import local_path


class OutputDirectoryError(OSError):
    """An output directory of the run cannot be created or written."""


def output_dirs(trainer: L.Trainer) -> list[tuple[str, str]]:
    """(what, path) of every local directory the run will write to, first occurrence of each path."""
    found = [("trainer.default_root_dir", trainer.default_root_dir)]
    for logger in trainer.loggers:
        name = type(logger).__name__
        # Not every logger has both (and `log_dir` fixes TensorBoard's version, as its first log would).
        found += [(f"{name} save_dir", getattr(logger, "save_dir", None))]
        found += [(f"{name} log_dir", getattr(logger, "log_dir", None))]
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            found.append((f"{type(callback).__name__} dirpath", callback.dirpath))
    unique: dict[str, str] = {}
    for what, path in found:
        local = local_path(path) if path is not None else None
        if local is not None:
            unique.setdefault(os.path.abspath(local), what)
    return [(what, path) for path, what in unique.items()]


def unwritable_reason(directory: str | os.PathLike[str]) -> str | None:
    """Why `directory` cannot be created or written to, or None when it can."""
    existing = Path(directory)
    while not existing.exists():  # the directories that do not exist yet would be created here
        if existing.parent == existing:
            return f"no existing ancestor of {directory}"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe-", dir=existing))
    except OSError as error:
        return f"cannot create a directory in {existing} ({error.strerror or error})"
    return None


def check_output_dirs(trainer: L.Trainer) -> None:
    """Raise `OutputDirectoryError` (one line, naming the setting) if an output directory is unusable."""
    problems = []
    for what, path in output_dirs(trainer):
        reason = unwritable_reason(path)
        if reason is not None:
            problems.append(f"{what} {path}: {reason}")
    if problems:
        raise OutputDirectoryError(
            f"cannot write the run's outputs: {'; '.join(problems)}; point these settings at a writable location"
        )
