"""Training callbacks: probes on labelled data, throughput, the end-of-run summary."""

from stablerep_pl.callbacks.linear_probe import LinearProbeCallback
from stablerep_pl.callbacks.monitoring import ImageThroughputMonitor, RunSummary, TorchThreads

__all__ = ["ImageThroughputMonitor", "LinearProbeCallback", "RunSummary", "TorchThreads"]
