"""Reading checkpoint files without running code from them.

A `.pth`/`.ckpt` file is a pickle: loading it with `torch.load(weights_only=False)` runs whatever its
`__reduce__` entries say, so a downloaded checkpoint could execute anything. Every checkpoint this
package reads goes through `load_checkpoint`: `torch.load(weights_only=True)` (tensors, containers and
plain Python values only) plus an explicit allow-list of the few classes real checkpoints hold. The
authors' files (google-research/syn-rep-learn) need exactly one: the `argparse.Namespace` of their
training arguments (their optimizer and `GradScaler` states are plain dicts of tensors, ints and
floats). Our Lightning checkpoints need none. A file needing anything else is refused with one line
that names the blocked global; nothing in it runs. `STABLEREP_TRUST_CHECKPOINTS=1` lifts the check
for files the user trusts.

Not covered: `distributed/consolidate.py` reads Lightning's own sharded-checkpoint metadata with
`weights_only=False` (files this package's training wrote, never downloaded ones).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

TRUST_ENV = "STABLEREP_TRUST_CHECKPOINTS"
# The classes real checkpoints hold beyond tensors and plain containers (see the module docstring).
SAFE_GLOBALS: list[Any] = [argparse.Namespace]


class UnsafeCheckpointError(ValueError):
    """The file needs arbitrary unpickling (a class or function outside the allow-list)."""


def trust_checkpoints() -> bool:
    return os.environ.get(TRUST_ENV, "") not in ("", "0", "false")


def checkpoint_path(path: str | Path) -> Path:
    """The path of a single-file checkpoint, with clear errors for a missing file or a sharded folder."""
    path = Path(path)
    if path.is_dir() and (path / ".metadata").is_file():
        raise ValueError(
            f"{path} is a sharded (FSDP) checkpoint folder; consolidate it into one file first: "
            f"python -m stablerep_pl.distributed.consolidate {path}  (then pass {path}.consolidated)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path) -> Any:
    """`torch.load(path)` on CPU with `weights_only=True` and the allow-list; refuses anything else."""
    path = checkpoint_path(path)
    if trust_checkpoints():
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(refusal(path, str(err))) from None


def refusal(path: Path, error: str) -> str:
    """One line: what was blocked, why, and how to proceed."""
    found = re.search(r"GLOBAL ([\w.]+)", error) or re.search(r"(Unsupported operand \d+)", error)
    needs = f"'{found.group(1)}'" if found else "objects outside the allow-list"
    return (
        f"refusing to load {path}: unpickling it would call {needs}, and a checkpoint that needs more "
        f"than tensors, plain values and argparse.Namespace could run arbitrary code; if you trust the "
        f"file, rerun with {TRUST_ENV}=1 (or re-save its tensors as safetensors in a trusted environment)"
    )
