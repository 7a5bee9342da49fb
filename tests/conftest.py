"""Test-wide settings: offline hub, few threads, seeded RNGs."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared test helpers (gloo_workers)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # xdist workers share the cores: each, and every process its tests start (fit runs, notebook
    # kernels), gets its share of threads. Oversubscribed OpenMP threads spin against each other:
    # the notebook test took 96 s next to another worker instead of 15 s alone.
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_share)

import pytest
import torch

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(_share)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
