"""`extract_features_distributed` under a real 2-process gloo group: same forwards on every rank.

Under FSDP2 every forward is a collective, so ranks that run different numbers of forwards hang.
The strided shares differ by one item when the set does not divide evenly (513 items, batch 256:
257 items and 2 forwards on rank 0, 256 and 1 forward on rank 1), and a rank may get no item at all.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from gloo_workers import run_gloo_workers
from stablerep_pl.evaluation import extract_features

WORKER = Path(__file__).with_name("features_dist_worker.py")
sys.path.insert(0, str(WORKER.parent))
from features_dist_worker import CASES, build_case  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_gloo_workers(WORKER, tmp_path_factory.mktemp("features_dist"), timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(("items", "batch_size"), CASES)
def test_every_rank_runs_the_same_forwards(ranks: list[dict], items: int, batch_size: int) -> None:
    calls = [r[(items, batch_size)]["calls"] for r in ranks]
    # The longest share (ceil(items / 2)) sets the number of forwards for everyone.
    assert calls == [math.ceil(math.ceil(items / 2) / batch_size)] * 2


@pytest.mark.slow
@pytest.mark.parametrize(("items", "batch_size"), CASES)
def test_features_equal_one_process_in_dataset_order(ranks: list[dict], items: int, batch_size: int) -> None:
    dataset, weight = build_case(items)
    expected_features, expected_labels = extract_features(
        lambda x: x @ weight, dataset, batch_size=batch_size
    )
    torch.testing.assert_close(expected_features, dataset.tensors[0] @ weight)  # the reference itself
    for result in ranks:
        got = result[(items, batch_size)]
        assert got["features"].shape == (items, 3)
        torch.testing.assert_close(got["features"], expected_features, rtol=0, atol=1e-6)
        assert torch.equal(got["labels"], expected_labels)
