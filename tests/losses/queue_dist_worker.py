"""One rank of the 2-process gloo checks of MultiPosQueueLoss, run by test_queue_distributed.py.

Usage: python queue_dist_worker.py RANK WORLD INIT_FILE SCENARIOS_FILE OUT_DIR (see tests/gloo_workers.py)

For every scenario (several steps of global features, ids and optional keys, with per-rank row splits)
this rank runs one MultiPosQueueLoss over the steps: takes its rows, back-propagates
`weight[rank] · loss` and records, per step, the loss, the gradients of its features and keys, and the
whole queue state after the step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from stablerep_pl.losses import MultiPosQueueLoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gloo_workers import gloo_worker_main


def run_scenario(scenario: dict, rank: int) -> list[dict]:
    loss_fn = MultiPosQueueLoss(**scenario["init"]).double().train()
    records = []
    for step in scenario["steps"]:
        start, rows = sum(step["splits"][:rank]), step["splits"][rank]
        features = step["features"][start : start + rows].clone().requires_grad_(True)
        labels = step["labels"][start : start + rows].clone()
        keys = None
        if step["keys"] is not None:
            keys = step["keys"][start : start + rows].clone().requires_grad_(True)
        value = loss_fn(features, labels, keys)
        (value * rows / sum(step["splits"])).backward()
        records.append({
            "loss": value.detach(),
            "grad": features.grad.clone(),
            "keys_grad": None if keys is None else keys.grad,
            "queue": {k: v.clone() for k, v in loss_fn.state_dict().items()},
        })  # fmt: skip
    return records


def compute(rank: int, world: int, extra: list[str]) -> dict:
    scenarios = torch.load(extra[0], weights_only=False)
    return {name: run_scenario(s, rank) for name, s in scenarios.items()}


if __name__ == "__main__":
    gloo_worker_main(compute)
