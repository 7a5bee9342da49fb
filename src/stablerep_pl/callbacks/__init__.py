"""Callbacks: online probes, throughput, caption grids, the end-of-run summary, and what a requeued run needs (RNG states, atomic checkpoints)."""

from stablerep_pl.callbacks.caption_grid import CaptionGrid
from stablerep_pl.callbacks.linear_probe import FrozenFeatureCallback, KNNCallback, LinearProbeCallback
from stablerep_pl.callbacks.monitoring import ImageThroughputMonitor, RunSummary, TorchThreads
from stablerep_pl.callbacks.resume import ExactResume

__all__ = [
    "CaptionGrid",
    "ExactResume",
    "FrozenFeatureCallback",
    "ImageThroughputMonitor",
    "KNNCallback",
    "LinearProbeCallback",
    "RunSummary",
    "TorchThreads",
]
