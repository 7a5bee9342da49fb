"""Where computation runs, named once: `auto` is the first CUDA device when there is one, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:1`, `mps`, … → a torch.device (fails on a device that does not exist)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


def bf16_is_native(device: torch.device) -> bool:
    """Whether `device` computes in bf16 in hardware: a CUDA GPU from Ampere on, or a CPU with
    AVX512-BF16 or AMX. Elsewhere bf16 autocast is emulated (converted around fp32 kernels, or
    oneDNN's reference kernels), which can make it slower than fp32. Unknown kinds count as native,
    so nothing is reported about what cannot be checked."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return True


def emulated_bf16_message(precision: str, device: torch.device) -> str | None:
    """What to tell a user whose run asks for bf16 on a device without it; None when all is well."""
    if "bf16" not in str(precision) or bf16_is_native(device):
        return None
    return (
        f"precision {precision!r} on {device.type}: this device has no bf16 hardware "
        "(AVX512-BF16/AMX on a CPU, Ampere or later on CUDA), so bf16 is emulated and may be slower "
        "than fp32; pass --trainer.precision 32-true"
    )
