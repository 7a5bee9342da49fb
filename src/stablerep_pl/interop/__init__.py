"""Checkpoints in and out: the authors' format, backbones of our runs, timm/safetensors export and model cards.

`load_authors_checkpoint(path)` and `export_authors_checkpoint(ckpt, out)` are imported lazily (they
need the LightningModules), so reading a backbone does not import Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_authors_checkpoint", "load_authors_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from stablerep_pl.interop import authors

        return getattr(authors, name)
    raise AttributeError(name)
