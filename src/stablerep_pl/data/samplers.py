"""The sampler of the on-the-fly caption dataset: a resumable, rank-aware order that names the epoch.

`EpochSampler` is torchdata's `StatefulDistributedSampler` (a DistributedSampler whose position is
saved and restored by `StatefulDataLoader`, so Lightning never replaces it under DDP) that yields
`(epoch, index)` keys instead of bare indices: the dataset seeds each item's draws from both, so
an epoch's items do not depend on worker RNG states. Its state also records the epoch, because
after a restore the loader may build its iterator before Lightning calls `set_epoch`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler


class EpochSampler(StatefulDistributedSampler):
    """Shuffled `(epoch, index)` keys of this rank's share; equal share sizes on every rank."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        for index in super().__iter__():
            yield epoch, int(index)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.epoch = int(state_dict.get("epoch", self.epoch))
