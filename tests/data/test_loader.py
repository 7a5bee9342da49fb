"""ResumableDataLoader: epochs named explicitly, finished-epoch states, stall timeout, reproducible order."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from stablerep_pl.data.loader import DataStallError, ResumableDataLoader
from stablerep_pl.data.samplers import EpochSampler


class Keys(Dataset):
    """Returns the (epoch, index) key it is asked for."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        return torch.tensor(key)


def loader(epoch_source=None, **kwargs) -> ResumableDataLoader:
    dataset = Keys()
    sampler = EpochSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    return ResumableDataLoader(dataset, batch_size=3, sampler=sampler, epoch_source=epoch_source, **kwargs)


def epochs_and_indices(batches: list[torch.Tensor]) -> tuple[set[int], list[int]]:
    keys = torch.cat(batches)
    return set(keys[:, 0].tolist()), keys[:, 1].tolist()


def test_epochs_are_counted_or_taken_from_the_source() -> None:
    counting = loader()
    first, second = list(counting), list(counting)
    assert epochs_and_indices(first)[0] == {0} and epochs_and_indices(second)[0] == {1}
    assert epochs_and_indices(first)[1] != epochs_and_indices(second)[1]  # reshuffled per epoch
    named = loader(epoch_source=lambda: 5)
    assert epochs_and_indices(list(named))[0] == {5}


def test_mid_epoch_state_continues_the_same_epoch() -> None:
    reference = list(loader())
    source = loader()
    it = iter(source)
    seen = [next(it), next(it)]
    state = source.state_dict()
    restored = loader(epoch_source=lambda: 0)
    restored.load_state_dict(state)
    assert torch.equal(torch.cat(seen + list(restored)), torch.cat(reference))


def test_state_saved_on_the_last_batch_restores_to_the_next_epoch() -> None:
    source = loader()
    list(source)  # epoch 0 delivered completely
    state = source.state_dict()
    assert state["ranks"][0]["finished"]
    restored = loader()
    restored.load_state_dict(state)
    epochs, indices = epochs_and_indices(list(restored))
    assert epochs == {1} and len(indices) == 12  # a whole epoch 1, not an exhausted epoch 0


def test_restored_epoch_wins_over_a_late_epoch_source() -> None:
    """After a restore the iterator may be built before the trainer names the epoch."""
    source = loader()
    it = iter(source)
    next(it)
    state = source.state_dict()
    restored = loader(epoch_source=lambda: 7)
    restored.load_state_dict(state)
    assert epochs_and_indices(list(restored))[0] == {0}


class Stuck(IterableDataset):
    def __iter__(self):
        while True:  # e.g. every sample skipped: never yields
            time.sleep(0.01)
        yield  # a generator, like every data stream


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stalled_source_fails_with_the_likely_causes(workers: int) -> None:
    stalled = ResumableDataLoader(Stuck(), batch_size=2, num_workers=workers, stall_timeout=1.5,
                                  stall_hint="Reading test shards.")  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(
        DataStallError, match=r"no training batch for 1.5 s.*Reading test shards.*views > images"
    ):
        next(iter(stalled))
    assert time.perf_counter() - start < 10


def test_the_guard_leaves_signal_handlers_as_it_found_them() -> None:
    import signal

    before = signal.getsignal(signal.SIGUSR2)
    it = iter(loader(stall_timeout=30))
    next(it)
    assert signal.getsignal(signal.SIGUSR2) is before
