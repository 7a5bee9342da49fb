"""Test-wide settings: offline hub, few threads, seeded RNGs."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared test helpers (gloo_workers)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# xdist workers share the cores: each, and every process its tests start (fit runs, notebook
# kernels), gets its share of threads. Oversubscribed OpenMP threads spin against each other: the
# notebook test took 96 s next to another worker instead of 15 s alone. Set before torch is imported.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
_THREADS = max(1, (os.cpu_count() or 1) // _WORKERS) if _WORKERS else None
if _THREADS:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_THREADS)

import pytest  # noqa: E402 - after the thread settings above
import torch  # noqa: E402

if _THREADS:
    torch.set_num_threads(_THREADS)  # in case a plugin imported torch before this file


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
