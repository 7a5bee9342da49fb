"""`reduce_step_stats` in a real 2-process gloo group: one collective, one shared decision.

A rank whose loss is finite must still learn that another rank's is not (else it would run backward
alone and wait forever in DDP's gradient all-reduce); the logged means must equal what Lightning's
`sync_dist=True` logged; the skip count is the sum over ranks.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from gloo_workers import run_gloo_workers
from stablerep_pl.methods.step_stats import reduce_step_stats

WORKER = Path(__file__).with_name("step_stats_dist_worker.py")
sys.path.insert(0, str(WORKER.parent))
from step_stats_dist_worker import CASES  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_gloo_workers(WORKER, tmp_path_factory.mktemp("step_stats_dist"), timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_one_all_reduce_and_nothing_else(ranks: list[dict], case: str) -> None:
    assert [r[case]["calls"] for r in ranks] == [["all_reduce"], ["all_reduce"]]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_every_rank_gets_the_same_decision_and_means(ranks: list[dict], case: str) -> None:
    per_rank = CASES[case]
    expected_nonfinite = {
        name: sum(not math.isfinite(values[name]) for values, _ in per_rank)
        for name in per_rank[0][0]
        if any(not math.isfinite(values[name]) for values, _ in per_rank)
    }
    for result in ranks:
        stats = result[case]["stats"]
        assert stats.nonfinite_ranks == expected_nonfinite and stats.world_size == 2
        assert stats.skipped_samples == sum(s or 0 for _, s in per_rank)
        assert stats.skips_reported == any(s is not None for _, s in per_rank)
        for name, mean in stats.means.items():
            reference = result[case]["lightning"][name]  # Lightning's sync_dist mean on this rank
            assert torch.equal(mean, reference) or (mean.isnan() and reference.isnan()), name


@pytest.mark.slow
def test_finite_means_are_the_mean_over_ranks(ranks: list[dict]) -> None:
    stats = ranks[0]["finite"]["stats"]
    assert float(stats.means["loss"]) == (1.25 + 0.75) / 2
    assert float(stats.means["image_loss"]) == (0.5 + 0.125) / 2


def test_without_a_process_group_nothing_is_reduced() -> None:
    losses = {"loss": torch.tensor(2.0), "aux": torch.tensor(float("nan"))}
    stats = reduce_step_stats(losses, torch.tensor(4), data_replicas=1)
    assert float(stats.means["loss"]) == 2.0 and stats.nonfinite_ranks == {"aux": 1}
    assert (stats.skipped_samples, stats.skips_reported, stats.world_size) == (4, True, 1)
    assert reduce_step_stats(losses, None).skips_reported is False
