"""Captions: the procedural grammar, caption files with stable keys, and CLIP tokens (no torch needed until tokens)."""
