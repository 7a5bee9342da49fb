"""What is known about the run behind a checkpoint: its config, data provenance and probe results.

Read from the files a run leaves: LightningCLI's `config.yaml` in the log directory (next to
`checkpoints/`), `hparams.yaml` beside it, the shard folder's `_info.json` / `_render.json`, the online
probes' state inside the checkpoint, and `results.json` of `stablerep probe` under `runs/probe/`.
Used by the model card and by the authors'-format export; every piece is optional.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stablerep_pl.models.authors_format import arg, is_authors_checkpoint

# Online probe callbacks and the metric prefix they log under.
ONLINE_PROBES = {"LinearProbeCallback": "online linear probe", "KNNCallback": "online kNN"}


def run_dirs(checkpoint: str | Path) -> list[Path]:
    """Where a run's files sit: the checkpoint's folder and, for `…/version_N/checkpoints/x.ckpt`, its parent."""
    folder = Path(checkpoint).resolve().parent
    return [folder, folder.parent] if folder.name == "checkpoints" else [folder]


def run_config(checkpoint: str | Path) -> tuple[Path | None, dict[str, Any]]:
    """LightningCLI's `config.yaml` of the run (path, parsed), or (None, {})."""
    for folder in run_dirs(checkpoint):
        path = folder / "config.yaml"
        if path.is_file():
            return path, yaml.safe_load(path.read_text()) or {}
    return None, {}


def global_batch(checkpoint: str | Path, ckpt: dict[str, Any]) -> int | None:
    """Images per optimiser step: recorded in the checkpoint, else the run's `hparams.yaml`, else the
    authors' args (captions per GPU × GPUs × images per caption)."""
    recorded = (ckpt.get("batch_and_lr") or {}).get("global_batch_images")
    if recorded is not None:
        return int(recorded)
    for folder in run_dirs(checkpoint):
        path = folder / "hparams.yaml"
        if path.is_file():
            value = (yaml.safe_load(path.read_text()) or {}).get("global_batch_images")
            if value is not None:
                return int(value)
    args = ckpt.get("args")
    if is_authors_checkpoint(ckpt) and arg(args, "batch_size") is not None:
        return (
            int(arg(args, "batch_size")) * int(arg(args, "world_size", 1) or 1) * int(arg(args, "n_img", 1))
        )
    return None


def data_provenance(config: dict[str, Any], ckpt: dict[str, Any]) -> dict[str, Any]:
    """Generator, its settings, images per caption and caption source of the training data."""
    if is_authors_checkpoint(ckpt):
        args = ckpt.get("args")
        return {"source": "the authors' training data", "captions": arg(args, "csv_path"),
                "image_folders": arg(args, "folder_list"), "images_per_step_per_caption": arg(args, "n_img")}  # fmt: skip
    data = config.get("data") or {}
    init = data.get("init_args") or {}
    out: dict[str, Any] = {"data_module": data.get("class_path")}
    if "urls" in init:
        out["shards"] = init["urls"]
        out.update(_shard_provenance(str(init["urls"])))
    else:
        generator = init.get("generator") or {}
        out["generator"] = {"class_path": generator.get("class_path"), **(generator.get("init_args") or {})}
        out["images_per_caption"] = init.get("images_per_caption")
        out["captions"] = init.get("captions") or {
            "source": "procedural caption grammar", "num_captions": init.get("num_captions"),
            "caption_seed": init.get("caption_seed"), "p_attribute": init.get("caption_p_attribute"),
        }  # fmt: skip
    out["views_per_caption"] = init.get("views")
    return out


def _shard_provenance(urls: str) -> dict[str, Any]:
    """From `_info.json` (or `_render.json`) in the shard folder, when it is local."""
    folder = Path(urls.split("::")[0]).parent
    for name in ("_info.json", "_render.json"):
        path = folder / name
        if path.is_file():
            info = json.loads(path.read_text())
            render_path = folder / "_render.json"
            render = json.loads(render_path.read_text()) if render_path.is_file() else {}
            return {
                "generator": info.get("generator"), "images_per_caption": info.get("images_per_caption"),
                "captions": {"num_captions": info.get("num_captions"),
                             "captions_sha256": render.get("captions_sha256")},
            }  # fmt: skip
    return {"note": f"no _info.json or _render.json found in {folder}"}


def online_probes(ckpt: dict[str, Any], config: dict[str, Any]) -> list[dict[str, Any]]:
    """The online probes' last results kept in the checkpoint's callback state."""
    eval_sets = {}
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        if isinstance(callback, dict):
            eval_set = ((callback.get("init_args") or {}).get("eval_set") or {}).get("class_path", "")
            eval_sets[callback.get("class_path", "").rsplit(".", 1)[-1]] = eval_set.rsplit(".", 1)[-1]
    found = []
    for key, state in (ckpt.get("callbacks") or {}).items():
        kind = next((k for k in ONLINE_PROBES if key.startswith(k)), None)
        result = state.get("last_result") if isinstance(state, dict) else None
        if kind and result:
            found.append({
                "name": ONLINE_PROBES[kind], "dataset": eval_sets.get(kind) or "evaluation set",
                "top1": float(result["top1"]), "baseline_top1": (state.get("baseline_result") or {}).get("top1"),
            })  # fmt: skip
    return found


def offline_probes(checkpoint: str | Path) -> dict[str, Any] | None:
    """The newest `results.json` of `stablerep probe` on this checkpoint (under `…/probe/*/`)."""
    target = Path(checkpoint).resolve()
    roots = {Path("runs/probe").resolve()} | {d.parent / "probe" for d in run_dirs(checkpoint)}
    roots |= {d.parent.parent / "probe" for d in run_dirs(checkpoint)}
    candidates = []
    for root in roots:
        for path in root.glob("*/results.json") if root.is_dir() else []:
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            stored = Path(str(report.get("checkpoint", "")))
            same = stored.resolve() == target or (
                not stored.is_absolute() and target.parts[-len(stored.parts) :] == stored.parts
            )
            if same:
                candidates.append((path.stat().st_mtime, path, report))
    if not candidates:
        return None
    _, path, report = max(candidates, key=lambda c: c[0])
    return {**report, "results_file": str(path)}
