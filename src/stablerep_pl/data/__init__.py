"""Captions, generators, augmentations and data modules."""
