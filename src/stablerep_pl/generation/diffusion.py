"""Stable Diffusion (any diffusers text-to-image pipeline) behind the `ImageGenerator` interface.

Each image gets its own CPU `torch.Generator` seeded from (caption key, image index, base seed):
diffusers draws every batch element's initial latents from its own generator, so an image is the
same whether rendered alone or in a batch, and on any device.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from stablerep_pl.distributed.devices import resolve_device
from stablerep_pl.generation.base import ImageGenerator, ImageRequest

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is fp16 on CUDA (what SD checkpoints are published for) and fp32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    return _DTYPES[dtype]


class DiffusionGenerator(ImageGenerator):
    """A diffusers pipeline (SD 1.x/2.x, SDXL, SD-Turbo …) loaded with `AutoPipelineForText2Image`.

    `model` is a hub id or a local folder; the default is SD 1.5 under its current hub id, as in
    `configs/render/sd15.yaml` (the old `runwayml/stable-diffusion-v1-5` was removed from the hub).
    The pipeline loads lazily on first use, so configs parse fast and DataLoader workers do not
    pickle weights. `output_size` is the saved size (the paper renders 512 px and keeps 256 px);
    None keeps the generated size.
    """

    def __init__(
        self,
        model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision: str | None = None,
        guidance_scale: float = 2.0,
        num_inference_steps: int = 50,
        scheduler: str | None = "DDIMScheduler",
        height: int | None = None,
        width: int | None = None,
        output_size: int | None = 256,
        negative_prompt: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        seed: int = 0,
        batch_size: int = 8,
        pipeline_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        self.model, self.revision = model, revision
        self.guidance_scale, self.num_inference_steps = guidance_scale, num_inference_steps
        self.scheduler_name = scheduler
        self.height, self.width, self.output_size = height, width, output_size
        self.negative_prompt = negative_prompt
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.pipeline_kwargs = dict(pipeline_kwargs or {})
        self._pipe: Any = None

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> DiffusionGenerator:
        """Wrap an already built pipeline (tests, notebooks); `kwargs` as for the constructor."""
        generator = cls(**kwargs)
        generator._pipe = generator._prepare(pipe)
        return generator

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            from diffusers import AutoPipelineForText2Image

            with warnings.catch_warnings():  # newer diffusers renamed `torch_dtype` to `dtype`
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = AutoPipelineForText2Image.from_pretrained(
                    self.model, revision=self.revision, torch_dtype=self.dtype, **self.pipeline_kwargs
                )
            self._pipe = self._prepare(pipe)
        return self._pipe

    def _prepare(self, pipe: Any) -> Any:
        if self.scheduler_name:
            import diffusers

            scheduler_cls = getattr(diffusers, self.scheduler_name, None)
            if scheduler_cls is None:
                raise ValueError(f"diffusers has no scheduler class {self.scheduler_name!r}")
            pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
        pipe = pipe.to(self.device)
        if pipe.dtype != self.dtype:  # from_pretrained already loaded in the requested dtype
            pipe = pipe.to(dtype=self.dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipe"] = None  # workers load their own copy; never pickle weights
        return state

    @torch.inference_mode()
    def render(self, requests: Sequence[ImageRequest]) -> list[Image.Image]:
        if not requests:
            return []
        generators = [torch.Generator("cpu").manual_seed(self.seed_for(r.key, r.index)) for r in requests]
        kwargs: dict[str, Any] = {}
        if self.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(requests)
        if self.height is not None:
            kwargs["height"] = self.height
        if self.width is not None:
            kwargs["width"] = self.width
        images = self.pipe(
            prompt=[r.caption for r in requests],
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generators,
            output_type="pil",
            **kwargs,
        ).images
        return [self._resize(image.convert("RGB")) for image in images]

    def _resize(self, image: Image.Image) -> Image.Image:
        if self.output_size is None or image.size == (self.output_size, self.output_size):
            return image
        return image.resize((self.output_size, self.output_size), Image.Resampling.LANCZOS)

    def provenance(self) -> dict[str, Any]:
        import diffusers

        scheduler = type(self._pipe.scheduler).__name__ if self._pipe is not None else self.scheduler_name
        return {
            **super().provenance(),
            "model": self.model,
            "revision": self.revision,
            "scheduler": scheduler,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "output_size": self.output_size,
            "negative_prompt": self.negative_prompt,
            "dtype": str(self.dtype).removeprefix("torch."),
            "diffusers_version": diffusers.__version__,
        }
