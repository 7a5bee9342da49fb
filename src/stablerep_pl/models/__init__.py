"""Plain nn.Modules (no Lightning): the timm backbone, the per-view projection head and the text tower."""

from stablerep_pl.models.backbones import TimmBackbone
from stablerep_pl.models.heads import ProjectionHead
from stablerep_pl.models.text import TextTransformer

__all__ = ["ProjectionHead", "TextTransformer", "TimmBackbone"]
