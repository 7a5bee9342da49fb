"""Class labels in place of caption ids: the SupCon upper bound of the replication study.

The multi-positive loss treats equal `caption_ids` as positives. With the object a caption's
images show as the id, the same loss is SupCon with true labels: every image of the same object
class in the batch is a positive, which no caption-level method can know. That makes it the
ceiling StableRep is measured against (`stablerep replicate`, study "method").

The label is the object the procedural generator *renders*, not only the one the caption names: a
caption without an object noun is rendered as `object_for_key(caption_key(caption))`, so that is
its label too (a test checks the two agree image by image). Labels are computed in the collate, so
the sampler, the reuse buffer, resumption and the per-item seeds are those of the plain module.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from stablerep_pl.captions.grammar import OBJECTS, parse_caption
from stablerep_pl.captions.keys import caption_key
from stablerep_pl.data.on_the_fly import GeneratorDataModule
from stablerep_pl.generation.procedural import object_for_key

LabelMode = Literal["caption", "object"]


def object_label(caption: str) -> int:
    """Index in `OBJECTS` of the object the procedural generator draws for `caption`."""
    named = parse_caption(caption).object
    return OBJECTS.index(named or object_for_key(caption_key(caption)))


class ObjectLabelCollate:
    """Wraps a collate: the batch's `caption_ids` become the object labels of its captions.

    A plain top-level class (no closure) so forked and spawned DataLoader workers can pickle it.
    """

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(items)
        batch["caption_ids"] = torch.tensor([object_label(c) for c in batch["caption"]], dtype=torch.long)
        return batch


class LabelledGeneratorDataModule(GeneratorDataModule):
    """`GeneratorDataModule` with `label_mode`: `caption` (StableRep, the default: ids are caption
    indices) or `object` (SupCon: ids are the rendered object classes, 12 of them).

    Every other argument is `GeneratorDataModule`'s, so a config switches with one `class_path` and
    one `label_mode` line. Meant for the procedural world; with other generators an `object` label
    is only as right as the caption's object noun.
    """

    def __init__(self, *args: Any, label_mode: LabelMode = "caption", **kwargs: Any) -> None:
        if label_mode not in ("caption", "object"):
            raise ValueError(f"label_mode must be 'caption' or 'object', got {label_mode!r}")
        super().__init__(*args, **kwargs)
        self.label_mode = label_mode
        if label_mode == "object":
            self.collate = ObjectLabelCollate(self.collate)
