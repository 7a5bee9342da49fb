"""`CaptionGrid`: what the model trains on, in TensorBoard.

Why: the views reach the model through a long pipeline (generator, choice of m of k images, crop,
colour, normalisation) whose mistakes never show in the loss: images that do not show their
caption, crops of pure background, a wrong normalisation. Every `every_n_steps` steps the callback
logs one image with a row per caption group of the current batch (the first `max_captions`): the
caption's text, its m augmented views exactly as the model receives them (un-normalised for
display), then the first `pool_images` of the caption's generated images, un-augmented; and the
captions as TensorBoard text.

The generated images come from the data module's `generated_pool`. `GeneratorDataModule` renders
images 0 … k'-1 of the caption again (the batch does not record which m of the k were drawn, so
the row shows the pool the views come from). `ShardDataModule` reads them back from the sample's
shard, which this callback asks it to name in every batch (`record_sources`: two short strings per
sample, and only when the callback is configured). The callback draws nothing and renders under a
preserved RNG, so a run is bit-identical with and without it.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import resize

from stablerep_pl.augment.transforms import IMAGENET_MEAN, IMAGENET_STD

PAD = 2  # pixels between rows and between tiles
GAP = 8  # extra pixels between the views and the generated pool
BACKGROUND = 255
TEXT_COLOUR = (20, 20, 20)


def display_views(images: torch.Tensor) -> torch.Tensor:
    """Normalised views `[..., 3, H, W]` → uint8 pixels (uint8 views, not yet normalised, pass through).

    A new tensor: the batch the model trains on is never touched.
    """
    if images.dtype == torch.uint8:
        return images.detach().cpu().clone()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = images.detach().float().cpu() * std + mean
    return (pixels.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Whatever runs inside leaves torch's (CPU and CUDA), numpy's and Python's global RNGs as they were."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def tensorboard_writer(trainer: L.Trainer) -> Any:
    """The SummaryWriter of the run's first TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def grid_size(rows: int, views: int, pool: int, tile: int, text_width: int) -> tuple[int, int]:
    """(height, width) of a grid: `rows` rows of a text panel, `views` tiles, then `pool` tiles."""
    return rows * (tile + PAD) - PAD, text_width + (views + pool) * (tile + PAD) + (GAP if pool else 0)


def compose_grid(
    views: torch.Tensor,
    pools: Sequence[Sequence[torch.Tensor]],
    captions: Sequence[str],
    zoom: int,
    text_width: int,
) -> torch.Tensor:
    """uint8 `[3, H, W]`: per row the caption, `views[r]` (`[m, 3, S, S]` uint8) and `pools[r]` (uint8
    images of any size, shown at S), each tile enlarged `zoom`× by pixel repetition (exact pixels)."""
    rows, m, _, size, _ = views.shape
    tile, pool = size * zoom, max((len(p) for p in pools), default=0)
    height, width = grid_size(rows, m, pool, tile, text_width)
    canvas = torch.full((3, height, width), BACKGROUND, dtype=torch.uint8)
    for r in range(rows):
        y = r * (tile + PAD)
        tiles = [views[r, c] for c in range(m)] + [resize(p, [size, size], antialias=True) for p in pools[r]]
        for c, image in enumerate(tiles):
            x = text_width + PAD + c * (tile + PAD) + (GAP if c >= m else 0)
            canvas[:, y : y + tile, x : x + tile] = image.repeat_interleave(zoom, 1).repeat_interleave(
                zoom, 2
            )
        panel = caption_panel(f"{r + 1}. {captions[r]}", text_width, tile)
        canvas[:, y : y + tile, :text_width] = torch.from_numpy(np.array(panel)).permute(2, 0, 1)
    return canvas


def caption_panel(text: str, width: int, height: int, font_size: int = 11) -> Image.Image:
    """`text` word-wrapped onto a white `width` × `height` panel; lines that do not fit end in "…"."""
    panel = Image.new("RGB", (width, height), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(panel)
    font = ImageFont.load_default(size=font_size)
    line_height = font_size + 2
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width - 4:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    fit = max(1, (height - 2) // line_height)
    if len(lines) > fit:
        lines = [*lines[: fit - 1], f"{lines[fit - 1]} …"]
    for i, line in enumerate(lines):
        draw.text((2, 1 + i * line_height), line, fill=TEXT_COLOUR, font=font)
    return panel


def caption_markdown(captions: Sequence[str], views: int, pool: int) -> str:
    legend = f"Columns: caption | {views} augmented views (as trained, un-normalised)"
    if pool:
        legend += f" | first {pool} generated images (un-augmented)"
    return legend + "\n\n" + "\n".join(f"{i + 1}. {c}" for i, c in enumerate(captions))


class CaptionGrid(L.Callback):
    """Logs a grid of caption groups with their views and generated images to TensorBoard.

    Args:
        every_n_steps: log at global steps 0, n, 2n, … (rank 0 only).
        max_captions: rows: the first caption groups of the batch.
        pool_images: generated images per row besides the views (0: views only).
        min_tile: views smaller than this are enlarged by pixel repetition (an integer factor).
        text_width: width of the caption panel in pixels.
        tag: TensorBoard tag of the image; the captions go to `{tag}_captions`.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        max_captions: int = 4,
        pool_images: int = 4,
        min_tile: int = 64,
        text_width: int = 200,
        tag: str = "train/caption_grid",
    ) -> None:
        if every_n_steps < 1 or max_captions < 1 or min_tile < 1 or text_width < 1:
            raise ValueError("every_n_steps, max_captions, min_tile and text_width must be >= 1")
        if pool_images < 0:
            raise ValueError(f"pool_images must be >= 0, got {pool_images}")
        self.every_n_steps, self.max_captions, self.pool_images = every_n_steps, max_captions, pool_images
        self.min_tile, self.text_width, self.tag = min_tile, text_width, tag
        self._last_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            rank_zero_info("CaptionGrid: the run has no TensorBoard logger; no grids are logged")
            return
        datamodule = getattr(trainer, "datamodule", None)
        if self.pool_images and hasattr(datamodule, "record_sources"):
            datamodule.record_sources = True  # before the loaders are built: batches name their shard

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or step == self._last_step or not trainer.is_global_zero:
            return
        writer = tensorboard_writer(trainer)
        if writer is None or not isinstance(batch, dict) or "images" not in batch:
            return
        self._last_step = step
        rows = min(self.max_captions, len(batch["caption"]))
        captions = [str(c) for c in batch["caption"][:rows]]
        views = display_views(batch["images"][:rows])
        pools = self.pools(getattr(trainer, "datamodule", None), batch, rows)
        zoom = max(1, math.ceil(self.min_tile / views.shape[-1]))
        writer.add_image(self.tag, compose_grid(views, pools, captions, zoom, self.text_width), step)
        pool = max((len(p) for p in pools), default=0)
        writer.add_text(f"{self.tag}_captions", caption_markdown(captions, views.shape[1], pool), step)

    def pools(self, datamodule: Any, batch: dict[str, Any], rows: int) -> list[list[torch.Tensor]]:
        pool_of = getattr(datamodule, "generated_pool", None)
        if not self.pool_images or pool_of is None:
            return [[] for _ in range(rows)]
        with preserved_rng(), torch.no_grad():
            return [[p.cpu() for p in pool_of(batch, r, self.pool_images)] for r in range(rows)]
