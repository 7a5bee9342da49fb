"""Training callbacks: probes on labelled data, throughput, the end-of-run summary."""

from stablerep_pl.callbacks.linear_probe import FrozenFeatureCallback, KNNCallback, LinearProbeCallback
from stablerep_pl.callbacks.monitoring import ImageThroughputMonitor, RunSummary, TorchThreads
from stablerep_pl.callbacks.resume import ExactResume

__all__ = [
    "ExactResume",
    "FrozenFeatureCallback",
    "ImageThroughputMonitor",
    "KNNCallback",
    "LinearProbeCallback",
    "RunSummary",
    "TorchThreads",
]
