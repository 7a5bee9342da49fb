"""Freed host memory kept in the process: counted in minor page faults of a fresh interpreter, since
glibc's settings are per process and cannot be undone once fixed."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from types import SimpleNamespace

import pytest

from stablerep_pl.distributed import host_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
MIB = 48  # above the 32 MiB up to which glibc's own thresholds ever adapt: always mapped afresh by default
# Faults per 48 MiB alloc-write-free cycle: one per page (4 KiB, or 2 MiB where transparent huge
# pages are on), so at least 24 when the block comes from the kernel each time. Kept, the first few
# cycles still fault: glibc's aligned allocation cannot reuse a freed block of exactly the size asked
# for until neighbours coalesce (measured: 5-6 blocks, then none), hence the warm-up.
FAULTS_FROM_KERNEL = MIB // 2
WARMUP = 12

CYCLES = f"""
import resource, torch
def faults_per_cycle():
    def cycle():
        block = torch.empty({MIB} << 20, dtype=torch.uint8)
        block.fill_(1)
        del block
    for _ in range({WARMUP}):
        cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        cycle()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
"""


def run(body: str, env: dict[str, str] | None = None) -> list[str]:
    ours = (host_memory.ENV_SWITCH, "LD_PRELOAD", "GLIBC_TUNABLES")  # nothing else may set malloc up
    environment = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("MALLOC_")}
    environment.update(HF_HUB_OFFLINE="1", **(env or {}))
    done = subprocess.run(
        [sys.executable, "-c", CYCLES + body], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    default, kept, after, reported = run(
        "from stablerep_pl.distributed.host_memory import keep_freed_host_memory, host_memory_kept\n"
        "default = faults_per_cycle()\n"
        "kept = keep_freed_host_memory()\n"
        "print(default, kept, faults_per_cycle(), host_memory_kept())\n"
    )
    assert kept == reported == "True"
    assert float(default) >= FAULTS_FROM_KERNEL, "glibc's default no longer maps large blocks afresh"
    assert float(after) < float(default) / 8


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_stablerep_command_keeps_it_from_start_up() -> None:
    faults, reported = run(
        "import contextlib, io\n"
        "from stablerep_pl.cli import main\n"
        "from stablerep_pl.distributed.host_memory import host_memory_kept\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main([])\n"  # the overview: start-up only, no subcommand
        "print(faults_per_cycle(), host_memory_kept())\n"
    )
    assert reported == "True" and float(faults) < FAULTS_FROM_KERNEL / 8


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_environment_switch_leaves_glibcs_defaults() -> None:
    kept, faults = run(
        "from stablerep_pl.distributed.host_memory import keep_freed_host_memory\n"
        "kept = keep_freed_host_memory()\n"
        "print(kept, faults_per_cycle())\n",
        {host_memory.ENV_SWITCH: "0"},
    )
    assert kept == "False" and float(faults) >= FAULTS_FROM_KERNEL


@pytest.mark.parametrize("threshold", [0, -1, 2**31, 1.5])
def test_a_threshold_mallopt_cannot_take_is_refused(threshold) -> None:
    with pytest.raises(ValueError, match="trim_threshold"):
        host_memory.keep_freed_host_memory(threshold)


def fake_c_library(monkeypatch, libc_name: str, malloc_of_process: str) -> list[tuple[int, int]]:
    """glibc (or not) with `malloc` served by glibc (or an interposed allocator); records mallopt calls."""
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    libc = SimpleNamespace(malloc="glibc", mallopt=mallopt)
    process = SimpleNamespace(malloc=malloc_of_process)
    fake = SimpleNamespace(CDLL=lambda name: libc if name == "libc.so.6" else process, c_int=ctypes.c_int)
    monkeypatch.setattr(host_memory, "ctypes", fake)
    monkeypatch.setattr(host_memory, "_address", lambda function: function)
    monkeypatch.setattr(host_memory, "sys", SimpleNamespace(platform="linux"))
    monkeypatch.setattr(host_memory, "platform", SimpleNamespace(libc_ver=lambda: (libc_name, "2.36")))
    monkeypatch.setattr(host_memory, "_kept", False)
    monkeypatch.delenv(host_memory.ENV_SWITCH, raising=False)
    return calls


def test_glibc_gets_no_per_block_mmap_and_the_trim_threshold(monkeypatch) -> None:
    calls = fake_c_library(monkeypatch, "glibc", malloc_of_process="glibc")
    assert host_memory.keep_freed_host_memory(1 << 20) is True and host_memory.host_memory_kept()
    assert calls == [(-4, 0), (-1, 1 << 20)]  # M_MMAP_MAX, M_TRIM_THRESHOLD


@pytest.mark.parametrize("libc_name, malloc_of_process", [("", "musl"), ("glibc", "jemalloc")])
def test_other_allocators_are_left_alone(monkeypatch, libc_name: str, malloc_of_process: str) -> None:
    calls = fake_c_library(monkeypatch, libc_name, malloc_of_process)
    assert host_memory.keep_freed_host_memory() is False and not host_memory.host_memory_kept()
    assert calls == []
