"""A Hugging Face-style model card for an exported backbone: what it is, how it was trained, how to load it.

Markdown with YAML front matter in the hub's format (`library_name: timm`, `license`, `tags`,
`datasets`, `model-index` when probe results exist), plus a `stablerep` block with the machine-readable
facts (timm name and arguments, steps, global batch, data provenance). Everything comes from the
checkpoint and the files its run left (`run_info.py`); what is not found is said, not guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stablerep_pl.interop.run_info import (
    data_provenance,
    global_batch,
    offline_probes,
    online_probes,
    run_config,
)
from stablerep_pl.models.authors_format import is_authors_checkpoint

MARKER = "<!-- model card written by `stablerep export` -->"
TAGS = ["image-feature-extraction", "timm", "stablerep", "self-supervised-learning", "synthetic-data"]


def card_path(out: Path) -> Path:
    """`README.md` beside the export, unless a README not written by us is there: then `<name>.README.md`."""
    readme = out.parent / "README.md"
    if not readme.exists() or MARKER in readme.read_text(errors="ignore"):
        return readme
    return out.with_name(out.stem + ".README.md")


def card_facts(checkpoint: str | Path, ckpt: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The `stablerep` block of the front matter."""
    config_path, config = run_config(checkpoint)
    authors = is_authors_checkpoint(ckpt)
    model = config.get("model") or {}
    training = vars(ckpt["args"]) if authors and hasattr(ckpt.get("args"), "__dict__") else None
    return {
        "timm_name": spec["name"], "timm_kwargs": dict(spec.get("kwargs") or {}),
        "method": "StableRep+ (authors' code)" if authors and "token_embedding.weight" in ckpt["model"]
        else "StableRep (authors' code)" if authors else str(model.get("class_path", "unknown")).rsplit(".", 1)[-1],
        "checkpoint": str(checkpoint),
        "steps": None if authors else int(ckpt.get("global_step", 0)),
        "epochs": int(ckpt.get("epoch", 0)) + 1 if authors else None,  # theirs: index of the last epoch
        "global_batch_images": global_batch(checkpoint, ckpt),
        "config_file": str(config_path) if config_path else None,
        "training_config": training or {"model": model.get("init_args"), "trainer": _trainer(config)},
        "data": data_provenance(config, ckpt),
    }  # fmt: skip


def _trainer(config: dict[str, Any]) -> dict[str, Any] | None:
    trainer = config.get("trainer")
    if not trainer:
        return None
    keep = (
        "devices",
        "num_nodes",
        "strategy",
        "precision",
        "max_epochs",
        "max_steps",
        "accumulate_grad_batches",
    )
    return {k: trainer.get(k) for k in keep if k in trainer}


def probe_results(checkpoint: str | Path, ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """Offline results of `stablerep probe` (if any) first, then the online probes in the checkpoint."""
    results = []
    offline = offline_probes(checkpoint)
    if offline:
        for row, value in (offline.get("results", {}).get("trained") or {}).items():
            if isinstance(value, dict) and "top1" in value:
                results.append({"name": f"{row} (stablerep probe)", "dataset": offline.get("eval_set"),
                                "top1": float(value["top1"]), "source": offline["results_file"]})  # fmt: skip
    results += [
        {**r, "source": "checkpoint callback state"} for r in online_probes(ckpt, run_config(checkpoint)[1])
    ]
    return results


def front_matter(
    facts: dict[str, Any], probes: list[dict[str, Any]], name: str, license: str
) -> dict[str, Any]:
    data = facts["data"]
    datasets = [d for d in [(data.get("captions") or {}).get("source") if isinstance(data.get("captions"), dict)
                            else data.get("captions")] if isinstance(d, str)]  # fmt: skip
    matter: dict[str, Any] = {"library_name": "timm", "license": license, "tags": TAGS,
                              "pipeline_tag": "image-feature-extraction"}  # fmt: skip
    if datasets:
        matter["datasets"] = datasets
    if probes:
        matter["metrics"] = ["accuracy"]
        matter["model-index"] = [{"name": name, "results": [
            {"task": {"type": "image-classification", "name": p["name"]},
             "dataset": {"name": str(p["dataset"]), "type": str(p["dataset"])},
             "metrics": [{"type": "accuracy", "name": "top-1 accuracy (%)", "value": round(100 * p["top1"], 2)}]}
            for p in probes]}]  # fmt: skip
    matter["stablerep"] = facts
    return matter


def render_card(
    facts: dict[str, Any], probes: list[dict[str, Any]], weights: Path, license: str = "apache-2.0"
) -> str:
    """The whole card: front matter, then the same facts for people."""
    matter = front_matter(facts, probes, weights.stem, license)
    kwargs = "".join(f", {k}={v!r}" for k, v in facts["timm_kwargs"].items())
    load = (f"import timm\n\nmodel = timm.create_model(\n    {facts['timm_name']!r}, pretrained=True, num_classes=0{kwargs},\n"
            f"    pretrained_cfg_overlay=dict(file={weights.name!r}),\n).eval()\nfeatures = model(images)  "
            "# [batch, num_features]: the class token after the final norm (ViT)")  # fmt: skip
    lines = [
        "---", yaml.safe_dump(matter, sort_keys=False, allow_unicode=True).rstrip(), "---", MARKER, "",
        f"# {weights.stem}", "",
        f"A {facts['timm_name']} backbone trained with {facts['method']} on synthetic images, exported "
        "by stablerep_pl. Features: the pooled output with `num_classes=0`.", "",
        "## Load with timm", "", "```python", load, "```", "",
        "## Training", "",
        f"- optimiser steps: {facts['steps'] if facts['steps'] is not None else 'not recorded'}"
        + (f"; epochs: {facts['epochs']}" if facts["epochs"] is not None else ""),
        f"- global batch: {facts['global_batch_images'] or 'not recorded'} images per optimiser step",
        f"- config: {facts['config_file'] or 'no config.yaml found beside the checkpoint'}", "",
        "```yaml", yaml.safe_dump(facts["training_config"], sort_keys=False).rstrip(), "```", "",
        "## Data provenance", "", "```json", json.dumps(facts["data"], indent=2, default=str), "```", "",
        "## Evaluation", "",
    ]  # fmt: skip
    if probes:
        lines += ["| evaluation | dataset | top-1 (%) | from |", "|---|---|---|---|"]
        lines += [f"| {p['name']} | {p['dataset']} | {100 * p['top1']:.2f} | {p['source']} |" for p in probes]
        lines += ["", "Online numbers are quick probes logged during training, not the paper's protocol."]
    else:
        lines.append("No probe results found (run `stablerep probe --ckpt CHECKPOINT ...`).")
    return "\n".join(lines) + "\n"


def write_model_card(checkpoint: str | Path, ckpt: dict[str, Any], spec: dict[str, Any], weights: Path,
                     license: str = "apache-2.0") -> Path:  # fmt: skip
    """Write the card beside `weights`; returns its path."""
    facts = card_facts(checkpoint, ckpt, spec)
    path = card_path(weights)
    path.write_text(render_card(facts, probe_results(checkpoint, ckpt), weights, license))
    return path
