"""Checkpoints in and out: backbones of our runs, timm/safetensors export."""
