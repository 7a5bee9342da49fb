"""Checkpoint files that hold either the previous save or the new one, never half of one.

Why not Lightning's `TorchCheckpointIO`: it serialises into memory and writes through an fsspec
transaction whose temporary file lives in `$TMPDIR`. The final `shutil.move` is a rename only when
`$TMPDIR` is on the checkpoint's filesystem; on a cluster (node-local /tmp, checkpoints on shared
storage) it copies onto the target in place, so a job killed mid-copy (SIGKILL, OOM, preemption)
leaves a truncated `last.ckpt` and the previous good state is gone. Its temporary is never removed
after a kill, nothing is fsynced, and the whole checkpoint is held twice in memory while saving.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic and durable; remote paths use Lightning's.

    A save streams `torch.save` into a temporary file next to the target, fsyncs it, `os.replace`s
    it onto the target (atomic on POSIX and Windows within one filesystem) and fsyncs the directory,
    so a kill at any point leaves the previous checkpoint loadable. Temporaries of the same target
    left by a killed save are removed before the next save. Install with `Trainer(plugins=[...])`.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        target = local_path(path)
        if target is None or storage_options is not None:  # remote, or the parent's TypeError
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        temporary = target.parent / f"{temporary_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}"
        # O_EXCL: never reuse a file; mode 0o666 minus the umask, the permissions Lightning gives.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)


def local_path(path: _PATH) -> Path | None:
    """The local filesystem path of `path` (plain or `file://`), None for remote filesystems."""
    if get_protocol(str(path)) not in LocalFileSystem.protocol:  # without importing remote backends
        return None
    return Path(LocalFileSystem._strip_protocol(str(path)))


def temporary_prefix(target: Path) -> str:
    """Hidden, not `*.ckpt`, and without the target's name: Lightning must never mistake a temporary
    for a checkpoint (older versions take any file whose name contains `last` for `ckpt_path="last"`)."""
    digest = hashlib.sha1(target.name.encode()).hexdigest()[:12]
    return f".ckpt-tmp-{digest}-"


def remove_stale_temporaries(target: Path) -> None:
    """Delete temporaries of `target` left by a killed save (saves of one target are sequential)."""
    pattern = re.compile(re.escape(temporary_prefix(target)) + r"\d+-[0-9a-f]{8}")
    for candidate in target.parent.iterdir():
        if pattern.fullmatch(candidate.name):
            candidate.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); best effort where directories cannot be opened or synced."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened; the rename is already durable there
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (e.g. certain network mounts) refuse fsync on directories
        pass
    finally:
        os.close(fd)
