"""Scale-out: BatchNorm synchronised on any device, FSDP2 sharding of any method and its strategy."""

from stablerep_pl.parallel.fully_shard import FullyShardStrategy, shard_method
from stablerep_pl.parallel.sync_batchnorm import CPUSyncBatchNorm, SyncBatchNormAnyDevice, all_reduce_sum

__all__ = [
    "CPUSyncBatchNorm",
    "FullyShardStrategy",
    "SyncBatchNormAnyDevice",
    "all_reduce_sum",
    "shard_method",
]
