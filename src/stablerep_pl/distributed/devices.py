"""Where computation runs, named once: `auto` is the first CUDA device when there is one, else the CPU."""

from __future__ import annotations

import contextlib
import platform

import torch

X86 = ("x86_64", "amd64", "i386", "i686")


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
    """Whether `device` computes in bf16 in hardware: a CUDA GPU from Ampere on, or an x86 CPU with
    AVX512-BF16 or AMX. Elsewhere bf16 autocast is emulated (converted around fp32 kernels, or
    oneDNN's reference kernels), which can make it slower than fp32. What cannot be checked counts
    as native: other CPU architectures (ARM has its own bf16 instructions), and a GPU before CUDA is
    initialised (querying it would initialise CUDA in the launcher, which forking launchers refuse)."""
    if device.type == "cuda":
        if not torch.cuda.is_initialized():
            return True
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        if platform.machine().lower() not in X86:
            return True
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return True


def fast_precision(device: str | torch.device = "auto") -> str:
    """`bf16-mixed` where bf16 is native, else `32-true`: what `make demo` passes to the quickstart.
    Initialises CUDA to ask the GPU, so call it in its own process, not in a launcher."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.cuda.init()
    return "bf16-mixed" if bf16_is_native(resolved) else "32-true"


def emulated_bf16_message(precision: str, device: torch.device) -> str | None:
    """What to tell a user whose run asks for bf16 on a device without it; None when all is well."""
    if "bf16" not in str(precision) or bf16_is_native(device):
        return None
    return (
        f"precision {precision!r} on {device.type}: this device has no bf16 hardware "
        "(AVX512-BF16/AMX on a CPU, Ampere or later on CUDA), so bf16 is emulated and may be slower "
        "than fp32; pass --trainer.precision 32-true"
    )


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp32 inside an enclosing autocast, where the device has one: for what is computed in fp32 on
    purpose (the losses' logits, the augmentation's pixels)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
