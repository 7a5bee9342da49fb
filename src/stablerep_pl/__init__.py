"""StableRep / StableRep+ in PyTorch Lightning: visual representations from synthetic images."""

__version__ = "0.1.0"
