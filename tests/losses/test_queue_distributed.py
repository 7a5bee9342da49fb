"""MultiPosQueueLoss on two gloo ranks vs one process on the concatenated batch with the same queue.

One pair of worker subprocesses (`queue_dist_worker.py`) runs every scenario: several steps, unequal
and empty local batches, a queue that wraps around, with and without momentum keys. Rank r
back-propagates w_r · L_r with w_r = n_r / N. After every step:
- L_r is the mean over rank r's anchors of the naive per-anchor losses against [global batch ; queue]
  (the global batch as its keys when given);
- Σ_r w_r L_r and the concatenated feature gradients equal the single process's, keys get none;
- both ranks hold the same queue, equal to the single process's (the gathered batch in rank order).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gloo_workers import run_gloo_workers
from stablerep_pl.losses import MultiPosQueueLoss

TOL = {"rtol": 1e-6, "atol": 1e-6}
WORLD = 2
DIM = 5
WORKER = Path(__file__).with_name("queue_dist_worker.py")


def _scenarios() -> dict[str, dict]:
    g = torch.Generator().manual_seed(1)

    def steps(splits: list[list[int]], keys: bool) -> list[dict]:
        out = []
        for split in splits:
            n = sum(split)
            out.append({
                "splits": split,
                "features": torch.randn(n, DIM, dtype=torch.float64, generator=g),
                "labels": torch.randint(0, 6, (n,), generator=g),  # captions recur across steps
                "keys": torch.randn(n, DIM, dtype=torch.float64, generator=g) if keys else None,
            })  # fmt: skip
        return out

    splits = [[3, 5], [4, 4], [6, 2], [0, 5], [2, 3]]  # 8 + 8 + 8 + 5 + 5 rows into a queue of 10
    return {
        "features": {"init": {"dim": DIM, "queue_size": 10}, "steps": steps(splits, keys=False)},
        "keys_chunked": {
            "init": {"dim": DIM, "queue_size": 10, "temperature": 0.2, "chunk_size": 2},
            "steps": steps(splits, keys=True),
        },
        "no_gather": {
            "init": {"dim": DIM, "queue_size": 6, "gather_distributed": False},
            "steps": steps([[3, 4], [4, 3], [5, 2]], keys=True),
            "local": True,
        },
    }


SCENARIOS = _scenarios()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("dist_queue")
    torch.save(SCENARIOS, tmp / "scenarios.pt")
    return run_gloo_workers(WORKER, tmp, [str(tmp / "scenarios.pt")], world=WORLD, timeout=120)


def _rows(t: torch.Tensor | None, split: list[int], rank: int) -> torch.Tensor | None:
    start = sum(split[:rank])
    return None if t is None else t[start : start + split[rank]]


def _assert_same_queue(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name in got:
        torch.testing.assert_close(got[name], expected[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("name", [n for n in SCENARIOS if not SCENARIOS[n].get("local")])
def test_two_ranks_equal_one_process_step_by_step(naive, rank_results: list[dict], name: str) -> None:
    scenario = SCENARIOS[name]
    single = MultiPosQueueLoss(**scenario["init"]).double().train()
    temperature = single.temperature
    for index, step in enumerate(scenario["steps"]):
        queue, queue_ids = (t.clone() for t in single.queued())  # before this step's enqueue
        features = step["features"].clone().requires_grad_(True)
        value = single(features, step["labels"], step["keys"])
        (grad,) = torch.autograd.grad(value, features)
        per_anchor = naive.multipos_queue(
            step["features"], step["labels"], queue, queue_ids, temperature, step["keys"]
        )
        results = [rank[name][index] for rank in rank_results]
        split, total = step["splits"], sum(step["splits"])
        for rank, result in enumerate(results):
            mine = _rows(per_anchor, split, rank)
            expected = mine.sum() / max(mine.shape[0], 1)
            torch.testing.assert_close(result["loss"], expected, **TOL)
            assert result["keys_grad"] is None  # keys are enqueued, never differentiated
            _assert_same_queue(result["queue"], single.state_dict())  # same queue on every rank
        combined = sum(r["loss"] * n / total for r, n in zip(results, split))
        torch.testing.assert_close(combined, value.detach(), **TOL)
        torch.testing.assert_close(torch.cat([r["grad"] for r in results]), grad, **TOL)
    assert int(single.queue_filled) == single.queue_size  # the scenario really wrapped around


def test_without_gather_each_rank_keeps_its_own_queue(rank_results: list[dict]) -> None:
    scenario = SCENARIOS["no_gather"]
    for rank in range(WORLD):
        local = MultiPosQueueLoss(**scenario["init"]).double().train()
        for index, step in enumerate(scenario["steps"]):
            split = step["splits"]
            features = _rows(step["features"], split, rank).clone().requires_grad_(True)
            value = local(features, _rows(step["labels"], split, rank), _rows(step["keys"], split, rank))
            (grad,) = torch.autograd.grad(value * split[rank] / sum(split), features)
            result = rank_results[rank]["no_gather"][index]
            torch.testing.assert_close(result["loss"], value.detach(), **TOL)
            torch.testing.assert_close(result["grad"], grad, **TOL)
            _assert_same_queue(result["queue"], local.state_dict())
    first, second = (rank_results[r]["no_gather"][-1]["queue"]["queue_labels"] for r in range(WORLD))
    assert not torch.equal(first, second)
