"""One cache of frozen evaluation features, shared by every evaluation callback of a run.

The linear-probe and kNN callbacks usually score the same evaluation set at the same moments; the
cache lets the second reuse the first's features instead of encoding the set again. An entry is keyed
by the evaluation set's fingerprint, the backbone object and the version counters of its parameters
and buffers (every optimiser step and BatchNorm update bumps them), so it can never serve features of
older weights. Only the latest entries are kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import nn

Features = tuple[torch.Tensor, torch.Tensor]


def weights_version(module: nn.Module) -> tuple[int, int]:
    """A cheap token that changes whenever any parameter or buffer of `module` is modified in place."""
    tensors = [*module.parameters(), *module.buffers()]
    return len(tensors), sum(t._version for t in tensors)


class FeatureCache:
    """A small LRU of `(train, test)` feature pairs."""

    def __init__(self, max_entries: int = 2) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[Features, Features]] = OrderedDict()
        self.hits = self.misses = 0

    def get_or_compute(
        self, key: Hashable, compute: Callable[[], tuple[Features, Features]]
    ) -> tuple[Features, Features]:
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        value = compute()
        self._entries[key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()


SHARED_FEATURE_CACHE = FeatureCache()
