"""Sweeps: one shard set per setting (guidance scale, diversity, steps, scheduler) from one render.

The paper's key knob is the classifier-free guidance scale (StableRep prefers about 2, SimCLR
about 8), so comparing values means rendering the same captions several times. A sweep renders
each caption group under every setting before moving on (Stable Diffusion encodes its prompts
once for all of them) with the same per-image seeds, so the shard sets differ only in the setting.
Each set lives in its own folder, `OUTPUT/guidance_2/…`, with its own `_render.json` (the setting
is in the generator provenance, under `sweep`) and `_info.json`, and resumes on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stablerep_pl.captions.sources import Caption
from stablerep_pl.generation.base import ImageGenerator
from stablerep_pl.generation.render import RenderReport, RenderTarget, render_targets

# Override name → folder label, in the order folder names list them.
LABELS = {
    "guidance_scale": "guidance",
    "diversity": "diversity",
    "num_inference_steps": "steps",
    "scheduler": "scheduler",
}


def sweep_settings(
    guidance_scales: Sequence[float] | None = None,
    diversities: Sequence[float] | None = None,
    steps_list: Sequence[int] | None = None,
    schedulers: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Every combination of the given values (an axis left as None is not swept), as overrides."""
    axes = {
        "guidance_scale": [float(g) for g in guidance_scales] if guidance_scales is not None else None,
        "diversity": [float(d) for d in diversities] if diversities is not None else None,
        "num_inference_steps": [int(s) for s in steps_list] if steps_list is not None else None,
        "scheduler": list(schedulers) if schedulers is not None else None,
    }
    given = {name: values for name, values in axes.items() if values is not None}
    for name, values in given.items():
        if not values:
            raise ValueError(f"the {LABELS[name]} sweep lists no values")
        if len(set(values)) != len(values):
            raise ValueError(f"the {LABELS[name]} sweep repeats a value: {values}")
    return [dict(zip(given, combo)) for combo in itertools.product(*given.values())]


def setting_folder(overrides: dict[str, Any]) -> str:
    """`guidance_1.5`, `guidance_2-steps_20`, … (whole floats without `.0`; others exactly, so two
    values never share a folder)."""
    if not overrides:
        raise ValueError("a sweep setting overrides at least one value")
    parts = []
    for name in sorted(overrides, key=list(LABELS).index):
        value = overrides[name]
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        parts.append(f"{LABELS[name]}_{text}")
    return "-".join(parts)


def render_sweep(
    generator: ImageGenerator,
    captions: Sequence[Caption],
    output: str | Path,
    settings: Sequence[dict[str, Any]],
    **kwargs: Any,
) -> dict[str, RenderReport]:
    """Render every setting's shard set under `output/<setting_folder>`; kwargs as `render_shards`.

    Returns the report of each folder. Re-running resumes every folder; adding a value adds a folder.
    """
    if not settings:
        raise ValueError("a sweep needs at least one setting")
    for overrides in settings:
        generator.with_settings(**overrides)  # reject an unknown or invalid setting before any work
    folders = [setting_folder(s) for s in settings]
    targets = [RenderTarget(Path(output) / f, dict(s)) for f, s in zip(folders, settings)]
    return dict(zip(folders, render_targets(generator, captions, targets, **kwargs)))
