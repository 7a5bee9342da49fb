"""Sharded checkpoint folders → one Lightning checkpoint (a real FSDP2 folder is consolidated and
resumed in tests/distributed/test_fully_shard_fit.py; here the layouts, from folders written in one process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from stablerep_pl.distributed.consolidate import consolidate, positional_optimizer_state


def named_optimizer_state() -> dict:
    return {
        "state": {"b.weight": {"step": torch.tensor(3.0)}, "a.weight": {"step": torch.tensor(1.0)}},
        "param_groups": [{"lr": 0.1, "params": ["a.weight"]}, {"lr": 0.2, "params": ["b.weight", "c.bias"]}],
    }


def test_optimizer_state_by_name_becomes_positional_in_group_order() -> None:
    state = positional_optimizer_state(named_optimizer_state())
    assert [g["params"] for g in state["param_groups"]] == [[0], [1, 2]]
    assert state["state"][0]["step"] == 1 and state["state"][1]["step"] == 3 and 2 not in state["state"]
    assert positional_optimizer_state(state) == state  # already positional: unchanged


@pytest.mark.parametrize("weights_key", ["model", "state_dict"])  # FSDPStrategy, ModelParallelStrategy
def test_both_lightning_layouts_consolidate(tmp_path: Path, weights_key: str) -> None:
    folder = tmp_path / "last.ckpt"
    weights = {"a.weight": torch.arange(6.0).reshape(2, 3), "b.weight": torch.ones(4)}
    dcp.save({weights_key: weights, "optimizer_0": named_optimizer_state()}, checkpoint_id=folder)
    torch.save({"global_step": 7, "epoch": 1}, folder / "meta.pt")
    out = consolidate(folder)
    assert out == tmp_path / "last.ckpt.consolidated"
    checkpoint = torch.load(out, weights_only=False)
    assert checkpoint["global_step"] == 7 and "model" not in checkpoint and "optimizer_0" not in checkpoint
    for name, value in weights.items():
        torch.testing.assert_close(checkpoint["state_dict"][name], value)
    assert checkpoint["optimizer_states"][0]["param_groups"][1]["params"] == [1, 2]


def test_a_plain_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.ckpt").mkdir()
    with pytest.raises(ValueError, match="not a sharded"):
        consolidate(tmp_path / "x.ckpt")
