"""Per-item seeds: derived the same everywhere, and drawn from without touching the caller's RNG."""

from __future__ import annotations

import pytest
import torch

from stablerep_pl.distributed.item_seeds import derive_seed, seeded_draws


def test_derive_seed_is_stable_and_distinct() -> None:
    # pinned: a checkpoint resumed on another machine or Python must see the same items
    assert derive_seed(0, "train", 3) == 6188701316825173292
    assert derive_seed(0, "train", 3) != derive_seed(0, "train", 4)
    assert 0 <= derive_seed("x") < 2**63


def test_seeded_draws_are_torch_manual_seeds_stream_and_leave_the_callers_rng(monkeypatch) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    # only the CPU generator: torch.manual_seed also queued accelerator seeds (0.65 ms per item)
    for module in (torch.cuda, torch.xpu):
        monkeypatch.setattr(module, "manual_seed_all", lambda _: pytest.fail("accelerator seeded"))
    with seeded_draws(7):
        inside = torch.rand(5), torch.randint(0, 1000, (5,))
    assert torch.equal(torch.get_rng_state(), before)
    monkeypatch.undo()
    torch.manual_seed(7)  # the public call, for reference: the same CPU stream bit for bit
    assert torch.equal(inside[0], torch.rand(5)) and torch.equal(inside[1], torch.randint(0, 1000, (5,)))
