"""The evaluation callbacks under a real 2-process gloo group agree with one process.

Each rank must encode only its share of the evaluation set (about half), yet every rank must end with
all features in dataset order, and the probe and kNN results must equal the single-process ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from gloo_workers import run_gloo_workers
from stablerep_pl.callbacks import KNNCallback, LinearProbeCallback

WORKER = Path(__file__).with_name("callbacks_dist_worker.py")
sys.path.insert(0, str(WORKER.parent))
from callbacks_dist_worker import build  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_gloo_workers(WORKER, tmp_path_factory.mktemp("callbacks_dist"))


@pytest.mark.slow
def test_two_ranks_agree_with_one_process(ranks: list[dict]) -> None:
    model, eval_set = build()
    probe = LinearProbeCallback(eval_set, steps=40, batch_size=5).probe(model)
    knn = KNNCallback(eval_set, k=3, batch_size=5).probe(model)
    train, test = LinearProbeCallback(eval_set, batch_size=5).features(model.backbone, torch.device("cpu"))
    for result in ranks:
        assert torch.allclose(result["train"][0], train[0], atol=1e-5)
        assert torch.equal(result["train"][1], train[1]) and torch.equal(result["test"][1], test[1])
        assert torch.allclose(result["test"][0], test[0], atol=1e-5)
        assert result["probe"].top1 == pytest.approx(probe.top1, abs=1e-6)
        assert result["probe"].best_lr == probe.best_lr
        assert result["knn"].top1 == pytest.approx(knn.top1, abs=1e-6)
        assert result["cache_misses"] == 1  # kNN and the second features() call reused the probe's


@pytest.mark.slow
def test_each_rank_encodes_only_its_share(ranks: list[dict]) -> None:
    total = len(build()[1].train_dataset()) + len(build()[1].test_dataset())
    assert [r["encoded"] for r in ranks] == [total // 2, total // 2]


@pytest.mark.slow
def test_uneven_and_tiny_sets_come_back_whole_and_in_order(ranks: list[dict]) -> None:
    inputs = ranks[0]["inputs"]
    for name in ("odd", "single"):
        x, y = inputs[name]
        for result in ranks:
            features, labels = result[name]
            assert torch.allclose(features, x @ inputs["weight"], atol=1e-6)
            assert torch.equal(labels, y)
