"""Text-to-image generators: one interface, procedural (offline default) and diffusion backends."""

from stablerep_pl.data.generators.base import (
    ImageGenerator,
    ImageRequest,
    caption_key,
    image_seed,
    normalize_caption,
)

__all__ = ["ImageGenerator", "ImageRequest", "caption_key", "image_seed", "normalize_caption"]
