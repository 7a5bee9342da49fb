"""Feature extraction and probes on frozen features (used by callbacks and `stablerep probe`)."""

from stablerep_pl.evaluation.linear import ProbeResult, extract_features, fit_linear_probe

__all__ = ["ProbeResult", "extract_features", "fit_linear_probe"]
