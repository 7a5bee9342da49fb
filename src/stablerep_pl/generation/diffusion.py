"""Stable Diffusion (any diffusers text-to-image pipeline) behind the `ImageGenerator` interface.

Each image gets its own CPU `torch.Generator` seeded from (caption key, image index, base seed):
diffusers draws every batch element's initial latents from its own generator, so an image is the
same whether rendered alone or in a batch, and on any device.

A guidance sweep (`render_variants`) encodes each batch's prompts once and passes the embeddings to
every pipeline call: classifier-free guidance is on only for a scale above 1 (diffusers' rule), so
the unconditional embeddings are computed when some variant needs them and given only to those.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
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
    None keeps the generated size. A sweep may override the guidance scale, the step count and the
    scheduler; its copies share the loaded pipeline and each installs its own scheduler for its calls
    only (the pipeline keeps the one `_prepare` set).
    """

    SETTINGS = ("guidance_scale", "num_inference_steps", "scheduler")

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
        self.model, self.revision = model, revision
        self.guidance_scale, self.num_inference_steps = guidance_scale, num_inference_steps
        self.scheduler_name = scheduler
        self.height, self.width, self.output_size = height, width, output_size
        self.negative_prompt = negative_prompt
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.pipeline_kwargs = dict(pipeline_kwargs or {})
        self._pipe: Any = None
        self._loaded_scheduler: Any = None  # the pipeline's own, which every scheduler is built from
        self._scheduler: Any = None  # this generator's, installed on the (shared) pipeline per call
        self.check_settings()

    def check_settings(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> DiffusionGenerator:
        """Wrap an already built pipeline (tests, notebooks); `kwargs` as for the constructor.

        The pipeline's current scheduler is taken as its own (other schedulers are built from its
        config), and `scheduler` replaces it on the pipeline.
        """
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
        self._loaded_scheduler = pipe.scheduler
        self._scheduler = self._build_scheduler()
        pipe.scheduler = self._scheduler
        pipe = pipe.to(self.device)
        if pipe.dtype != self.dtype:  # from_pretrained already loaded in the requested dtype
            pipe = pipe.to(dtype=self.dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _build_scheduler(self) -> Any:
        if not self.scheduler_name:
            return self._loaded_scheduler
        import diffusers

        scheduler_cls = getattr(diffusers, self.scheduler_name, None)
        if scheduler_cls is None:
            raise ValueError(f"diffusers has no scheduler class {self.scheduler_name!r}")
        return scheduler_cls.from_config(self._loaded_scheduler.config)

    def with_settings(self, **overrides: Any) -> DiffusionGenerator:
        """A copy sharing this generator's pipeline (loaded now if it was not yet)."""
        self.pipe  # noqa: B018 - load before copying, or each copy would load its own weights
        return super().with_settings(**overrides)

    def _apply_settings(self, overrides: dict[str, Any]) -> None:
        if "scheduler" in overrides:
            self.scheduler_name = overrides.pop("scheduler")
            self._scheduler = self._build_scheduler()
        super()._apply_settings(overrides)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_pipe", "_loaded_scheduler", "_scheduler"):
            state[name] = None  # workers load their own copy; never pickle weights
        return state

    def render(self, requests: Sequence[ImageRequest]) -> list[Image.Image]:
        return self.render_variants(requests, [{}])[0]

    @torch.inference_mode()
    def render_variants(
        self, requests: Sequence[ImageRequest], variants: Sequence[Mapping[str, Any]]
    ) -> list[list[Image.Image]]:
        """One prompt encoding per distinct caption of the batch (not per image), shared by every
        variant's pipeline call, when the pipeline takes SD-style embeddings; otherwise each call
        encodes its prompts itself."""
        if not requests:
            return [[] for _ in variants]
        pipe = self.pipe
        copies = [self.with_settings(**v) if v else self for v in variants]
        embeddings = None
        if takes_prompt_embeddings(pipe):
            guided = any(c.guidance_scale > 1 for c in copies)
            embeddings = self._encode_once_per_caption(pipe, [r.caption for r in requests], guided)
        return [c._call_pipeline(pipe, requests, embeddings) for c in copies]

    def _encode_once_per_caption(self, pipe: Any, captions: list[str], guided: bool) -> tuple:
        """(positive, negative) embeddings, one row per image, from one encoding per distinct caption:
        k images of a caption cost one text-encoder row instead of k."""
        distinct = list(dict.fromkeys(captions))
        positive, negative = pipe.encode_prompt(
            prompt=distinct,
            device=getattr(pipe, "_execution_device", self.device),
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=self._negative_prompts(len(distinct)),
        )
        row = {caption: i for i, caption in enumerate(distinct)}
        index = torch.tensor([row[c] for c in captions], device=positive.device)
        return positive[index], None if negative is None else negative[index]

    def _negative_prompts(self, count: int) -> list[str] | None:
        return None if self.negative_prompt is None else [self.negative_prompt] * count

    def _call_pipeline(
        self, pipe: Any, requests: Sequence[ImageRequest], embeddings: Any
    ) -> list[Image.Image]:
        generators = [torch.Generator("cpu").manual_seed(self.seed_for(r.key, r.index)) for r in requests]
        kwargs: dict[str, Any] = {}
        if embeddings is None:
            kwargs["prompt"] = [r.caption for r in requests]
            kwargs["negative_prompt"] = self._negative_prompts(len(requests))
        else:
            kwargs["prompt_embeds"] = embeddings[0]
            if self.guidance_scale > 1:  # without guidance diffusers never uses the negative branch
                kwargs["negative_prompt_embeds"] = embeddings[1]
        if self.height is not None:
            kwargs["height"] = self.height
        if self.width is not None:
            kwargs["width"] = self.width
        previous, pipe.scheduler = pipe.scheduler, self._scheduler  # a copy's scheduler, for this call only
        try:
            images = pipe(
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=generators,
                output_type="pil",
                **kwargs,
            ).images
        finally:
            pipe.scheduler = previous
        return [self._resize(image if image.mode == "RGB" else image.convert("RGB")) for image in images]

    def _resize(self, image: Image.Image) -> Image.Image:
        if self.output_size is None or image.size == (self.output_size, self.output_size):
            return image
        return image.resize((self.output_size, self.output_size), Image.Resampling.LANCZOS)

    def provenance(self) -> dict[str, Any]:
        import diffusers

        scheduler = type(self._scheduler).__name__ if self._scheduler is not None else self.scheduler_name
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


def takes_prompt_embeddings(pipe: Any) -> bool:
    """Whether `pipe` encodes like SD 1.x/2.x: `encode_prompt` → (positive, negative) embeddings that
    `__call__` takes back. Pipelines with more text encoders (SDXL, SD3) encode per call instead."""
    encode = getattr(pipe, "encode_prompt", None)
    if encode is None:
        return False
    takes = set(inspect.signature(encode).parameters)
    calls = set(inspect.signature(pipe.__call__).parameters)
    return (
        {"prompt", "do_classifier_free_guidance", "negative_prompt", "num_images_per_prompt"} <= takes
        and "prompt_2" not in takes
        and {"prompt_embeds", "negative_prompt_embeds"} <= calls
    )
