"""Keep freed host memory in the process, so that a CPU step does not fault in fresh pages every call.

glibc's malloc serves large blocks with a fresh `mmap` and returns the heap's top to the kernel above
a trim threshold, and it moves both thresholds with the history of frees (blocks above 32 MiB are
always mapped afresh). A CPU forward whose activations are megabytes then gets new zero-filled pages
from the kernel, one minor page fault per 4 KiB, on every call, or not, depending on what the process
allocated before. Measured on the tiny Stable Diffusion pipeline (`benchmarks/generation.py`),
batched generation took 13 k to 251 k faults per call and ran at 30-47 images/s from one process to
the next; with the blocks kept, none and 42-55 images/s, and its median speed-up over one caption
per call went from 1.90× (6 processes) to 2.30× (10). The one-caption calls took none either way.

`stablerep` applies this at start-up, before any subcommand; forked DataLoader workers inherit it.
The cost: the process keeps its high-water mark of host memory (less what exceeds `trim_threshold`
free at the heap's top), as a caching allocator does; measured, +30 MiB over ~950 MiB for the batched
generation above and +3 % of peak RSS for the quickstart. A loop re-allocating one large block is
glibc's worst case: its aligned allocation cannot reuse a freed block of exactly the size asked for
until neighbours coalesce, so a 48 MiB block was kept 5-6 times (240-290 MiB) before faults stopped.
Each forked DataLoader worker keeps its own high-water mark. Workers started with `spawn` or
`forkserver` (`multiprocessing_context`) start from glibc's defaults: only the CPU generation in them
would gain from calling this. `STABLEREP_KEEP_FREED_MEMORY=0` leaves glibc's defaults, for a job
short of memory; it overrides a user's own `MALLOC_*_`/`GLIBC_TUNABLES` settings for the two values
it sets. Elsewhere than glibc (macOS, musl, Windows), or with another allocator in `LD_PRELOAD`
(jemalloc, tcmalloc: they cache freed memory themselves), it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

ENV_SWITCH = "STABLEREP_KEEP_FREED_MEMORY"
DEFAULT_TRIM_THRESHOLD = 1 << 30  # 1 GiB free at the heap's top before any is given back
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
_INT_MAX = 2**31 - 1  # mallopt takes a C int

_kept = False


def keep_freed_host_memory(trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Serve blocks from the heap (no per-block `mmap`; other threads' arenas still map requests
    over 64 MiB) and give back only what exceeds `trim_threshold` bytes at its top; fixed values, so
    the behaviour no longer depends on history.

    Returns whether the setting is in force: False where the C library is not glibc, where another
    allocator (jemalloc, tcmalloc in `LD_PRELOAD`) serves `malloc`, or when
    `STABLEREP_KEEP_FREED_MEMORY=0` (unless an earlier call already applied it: it cannot be undone).
    Calling it again is harmless.
    """
    global _kept
    if not isinstance(trim_threshold, int) or not 0 < trim_threshold <= _INT_MAX:
        raise ValueError(f"trim_threshold must be an int in (0, {_INT_MAX}] bytes, got {trim_threshold!r}")
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return _kept
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    if _address(ctypes.CDLL(None).malloc) != _address(libc.malloc):
        return False  # an interposed allocator: glibc's settings would not touch it
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _kept


def _address(function: object) -> int | None:
    return ctypes.cast(function, ctypes.c_void_p).value


def host_memory_kept() -> bool:
    """Whether `keep_freed_host_memory` put the setting in force in this process (reports print it)."""
    return _kept
