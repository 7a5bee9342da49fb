"""Input checks shared by the losses: fail early with a message that names the argument.

Why: a wrong shape or a float label tensor otherwise surfaces deep inside a matmul, or worse, silently
broadcasts; in a distributed run one rank failing late also leaves the others hanging in a collective.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_INTEGER_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def check_features(features: object, name: str) -> None:
    """`features` must be a floating tensor of shape [N, D] with D ≥ 1."""
    if not isinstance(features, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{name} must have shape [N, D], got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {features.dtype}")
    if features.shape[1] == 0:
        raise ValueError(f"{name} must have a non-empty feature dimension, got {tuple(features.shape)}")


def check_labels(labels: object, num_rows: int, name: str, rows_name: str) -> None:
    """`labels` must be a 1-D integer tensor with one entry per row of `rows_name`."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of integer ids, got {type(labels).__name__}")
    if labels.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"{name} must hold integer ids (int64, int32, ...), got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != num_rows:
        raise ValueError(
            f"{name} must have shape [{num_rows}] (one id per row of {rows_name}), got {tuple(labels.shape)}"
        )


def check_same_dim(first: Tensor, second: Tensor, names: tuple[str, str]) -> None:
    """Two feature sets compared by dot products must share their feature dimension."""
    if first.shape[1] != second.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same feature dimension, "
            f"got {first.shape[1]} and {second.shape[1]}"
        )


def check_same_rows(first: Tensor, second: Tensor, names: tuple[str, str]) -> None:
    """Paired inputs (two views, an image and its caption) need the same number of rows."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of rows (row i of one is paired "
            f"with row i of the other), got {first.shape[0]} and {second.shape[0]}"
        )


def check_temperature(temperature: object) -> float:
    """A finite, strictly positive number; returned as float."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return float(temperature)


def check_chunk_size(chunk_size: object) -> int | None:
    """None (one block) or a positive number of anchor rows per chunk."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
    return chunk_size


def check_scalar(value: object, name: str, positive: bool) -> None:
    """A Python number or a one-element tensor (a learnable parameter is fine).

    Values of tensors are not inspected: that would force a device→host sync every step.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar (one-element tensor), got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or a one-element tensor, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0 (it is the already-exponentiated multiplier), got {value!r}")
