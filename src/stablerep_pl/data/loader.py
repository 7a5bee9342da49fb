"""The training DataLoader: torchdata's StatefulDataLoader plus what a requeued multi-rank run needs.

Lightning saves and restores a loader that has `state_dict`/`load_state_dict` (torchdata's
`StatefulDataLoader`: sampler position, worker dataset states, which worker is next). Three gaps
remain, handled here:
- Lightning writes only rank 0's loader state, but every rank's position differs (their shards,
  their skipped samples); `state_dict` gathers every rank's state and `load_state_dict` picks this
  rank's.
- The epoch: after a restore, torchdata may build the iterator before Lightning calls `set_epoch`,
  and iterable datasets have no sampler to receive it. The loader names the epoch itself (the
  trainer's epoch when it has one, else its own count) and hands it to the sampler and dataset
  before each iterator exists. A state saved at the very end of an epoch (a checkpoint on the last
  batch) restores to the start of the next epoch instead of to an exhausted iterator.
- Silent hangs: with `stall_timeout`, waiting longer than that for one batch raises `DataStallError`
  naming the likely causes, instead of spinning forever.
"""

from __future__ import annotations

import _thread
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torchdata.stateful_dataloader import StatefulDataLoader

STALL_CAUSES = (
    "a generator or shard source far slower than expected, every sample being skipped (corrupt or "
    "unreadable shards, views > images per caption), unreachable shard URLs, or a deadlocked worker"
)


class DataStallError(RuntimeError):
    """No training batch arrived within the configured time."""


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableDataLoader(StatefulDataLoader):
    """`StatefulDataLoader` with per-rank state, an explicit epoch and a stall timeout.

    Args:
        epoch_source: returns the epoch about to start (e.g. the trainer's), or None to count.
        stall_timeout: seconds to wait for one batch before raising `DataStallError`; None waits forever.
        stall_hint: what most likely stalls this particular data source, added to the message.
        **kwargs: as for `torch.utils.data.DataLoader`. A private `generator` is the default, so
            building iterators never draws from (and shifts) the training process's global RNG.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        epoch_source: Callable[[], int | None] | None = None,
        stall_timeout: float | None = None,
        stall_hint: str = "",
        **kwargs: Any,
    ) -> None:
        if stall_timeout is not None and stall_timeout <= 0:
            raise ValueError(f"stall_timeout must be > 0 seconds or None, got {stall_timeout}")
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
        if stall_timeout is not None and kwargs.get("num_workers", 0) > 0:
            kwargs.setdefault("timeout", stall_timeout)  # torch's own wait for a worker's batch
        self.epoch_source = epoch_source
        self.stall_timeout, self.stall_hint = stall_timeout, stall_hint
        self.current_epoch, self._next_epoch = 0, 0
        self._restored_epoch: int | None = None
        self._delivered = 0
        with warnings.catch_warnings():  # torchdata calls torch.set_vital, deprecated in torch 2.14
            warnings.filterwarnings("ignore", message=".*set_vital.*")
            super().__init__(dataset, **kwargs)

    # -- the epoch ---------------------------------------------------------------------------
    def _apply_epoch(self, epoch: int) -> None:
        self.current_epoch, self._next_epoch = epoch, epoch + 1
        targets = {
            id(o): o for o in (self.sampler, getattr(self.batch_sampler, "sampler", None), self.dataset)
        }
        for target in targets.values():
            set_epoch = getattr(target, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    def _epoch_to_start(self) -> int:
        if self._restored_epoch is not None:
            epoch, self._restored_epoch = self._restored_epoch, None
            return epoch
        named = self.epoch_source() if self.epoch_source is not None else None
        return self._next_epoch if named is None else int(named)

    def __iter__(self) -> Iterator[Any]:
        if not self._initial_iter_for_state_dict:  # an iterator built for a restore already has its epoch
            self._apply_epoch(self._epoch_to_start())
        self._delivered = 0
        iterator = super().__iter__()
        if self.stall_timeout is None or threading.current_thread() is not threading.main_thread():
            return _Counting(iterator, self)
        return _StallGuard(iterator, self)

    # -- state -------------------------------------------------------------------------------
    def _epoch_finished(self, inner: dict[str, Any]) -> bool:
        try:
            if self._delivered >= len(self):
                return True
        except TypeError:
            pass
        return bool(inner.get("_iterator_finished", False))

    def state_dict(self) -> dict[str, Any]:
        inner = super().state_dict()
        own = {"epoch": self.current_epoch, "finished": self._epoch_finished(inner), "loader": inner}
        _, world = _rank_and_world()
        if world == 1:
            return {"ranks": [own]}
        states: list[Any] = [None] * world
        dist.all_gather_object(states, own)  # every rank calls state_dict while a checkpoint is dumped
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks")
        if ranks is None:  # a plain StatefulDataLoader state
            super().load_state_dict(state_dict)
            return
        rank, world = _rank_and_world()
        if len(ranks) != world:
            warnings.warn(
                f"the checkpoint holds data-loader states of {len(ranks)} ranks but this run has {world}: "
                f"epoch {ranks[0]['epoch']} restarts from its first batch (the data order cannot continue "
                "exactly on another number of ranks)",
                stacklevel=2,
            )
            own = {"epoch": ranks[0]["epoch"], "finished": False, "loader": {}}
        else:
            own = ranks[rank]
        if own["finished"]:  # saved on the last batch of an epoch: continue with the next one
            self._restored_epoch = int(own["epoch"]) + 1
            super().load_state_dict({})
        else:
            self._restored_epoch = int(own["epoch"])
            super().load_state_dict(own["loader"])
        self._apply_epoch(self._restored_epoch)


class _Counting:
    """The loader's iterator, counting delivered batches (the state needs to know a finished epoch)."""

    def __init__(self, inner: Iterator[Any], loader: ResumableDataLoader) -> None:
        self.inner, self.loader = inner, loader

    def __iter__(self) -> _Counting:
        return self

    def __next__(self) -> Any:
        batch = self._next()
        self.loader._delivered += 1
        return batch

    def _next(self) -> Any:
        return next(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _StallGuard(_Counting):
    """Raises `DataStallError` in the training process when one batch takes longer than the timeout.

    With workers, torch's own DataLoader `timeout` does the waiting and its RuntimeError is
    translated. In-process loading (`num_workers: 0`) runs our data code in this thread, so a timer
    thread interrupts it (`_thread.interrupt_main` with SIGUSR2's Python handler, swapped in only
    while a batch is fetched: no OS signal is sent and SIGALRM/SIGUSR1 stay free for others).
    """

    def message(self) -> str:
        hint = f" {self.loader.stall_hint}" if self.loader.stall_hint else ""
        return (
            f"no training batch for {self.loader.stall_timeout:g} s (data stall_timeout).{hint} "
            f"Likely causes: {STALL_CAUSES}"
        )

    def _next(self) -> Any:
        if self.loader.num_workers > 0:
            try:
                return next(self.inner)
            except RuntimeError as err:
                if "timed out" in str(err):
                    raise DataStallError(self.message()) from err
                raise

        def expired(signum: int, frame: Any) -> None:
            raise DataStallError(self.message())

        previous = signal.signal(signal.SIGUSR2, expired)
        timer = threading.Timer(
            float(self.loader.stall_timeout or 0), _thread.interrupt_main, (signal.SIGUSR2,)
        )
        timer.daemon = True
        timer.start()
        try:
            return next(self.inner)
        finally:
            timer.cancel()
            timer.join()
            signal.signal(signal.SIGUSR2, previous)
