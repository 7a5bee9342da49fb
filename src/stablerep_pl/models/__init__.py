"""Plain nn.Modules (no Lightning): backbones, projection heads, text towers."""

from stablerep_pl.models.backbones import TimmBackbone
from stablerep_pl.models.heads import ProjectionHead
from stablerep_pl.models.text import CaptionTokenizer, TextTransformer

__all__ = ["CaptionTokenizer", "ProjectionHead", "TextTransformer", "TimmBackbone"]
