"""Across ranks and processes: gather with gradients, seeding (per rank, per data item), BatchNorm synchronised on any device, FSDP2 and checkpoint consolidation; and where a process runs (devices, host memory)."""

_EXPORTS = {
    "CPUSyncBatchNorm": "stablerep_pl.distributed.sync_batchnorm",
    "FullyShardStrategy": "stablerep_pl.distributed.fully_shard",
    "SyncBatchNormAnyDevice": "stablerep_pl.distributed.sync_batchnorm",
    "all_reduce_sum": "stablerep_pl.distributed.sync_batchnorm",
    "shard_method": "stablerep_pl.distributed.fully_shard",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Lazy, so that the losses' `distributed.gather` does not import Lightning's strategies."""
    if name not in _EXPORTS:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
