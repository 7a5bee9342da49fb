"""Text-to-image generation: the generator interface, the procedural and diffusion generators, and rendering to shards."""

from stablerep_pl.generation.base import ImageGenerator, ImageRequest, image_seed

__all__ = ["ImageGenerator", "ImageRequest", "image_seed"]
