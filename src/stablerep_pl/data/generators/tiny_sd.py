"""A tiny random-weight Stable Diffusion pipeline built from configs, for tests and CPU benchmarks.

Same classes as Stable Diffusion v1.x (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIP BPE
tokenizer), a few hundred thousand parameters, no download. Its images are noise-like; what it
exercises is the real diffusers code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stablerep_pl.models.tokenizer import build_clip_tokenizer


def build_tiny_sd_pipeline(seed: int = 0, sample_size: int = 32) -> Any:
    """A `StableDiffusionPipeline` generating `sample_size` px images (latents at 1/4 resolution)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        )
    )  # fmt: skip
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=sample_size // 4,
        in_channels=4, out_channels=4, cross_attention_dim=32, norm_num_groups=32, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32, sample_size=sample_size,
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_clip_tokenizer(), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sd_pipeline(path: str | Path, seed: int = 0, sample_size: int = 32) -> Path:
    """Write the tiny pipeline as a local diffusers folder, loadable by `DiffusionGenerator(model=path)`."""
    path = Path(path)
    build_tiny_sd_pipeline(seed, sample_size).save_pretrained(path)
    return path
