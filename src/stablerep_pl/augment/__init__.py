"""Augmentation: the paper's per-image transforms, their batched kernels, and where augmentation runs."""
