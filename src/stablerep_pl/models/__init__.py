"""Plain nn.Modules (no Lightning): backbones, projection heads, text towers."""

from stablerep_pl.models.backbones import TimmBackbone
from stablerep_pl.models.heads import ProjectionHead

__all__ = ["ProjectionHead", "TimmBackbone"]
