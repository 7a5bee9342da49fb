"""Any timm model by name as a feature extractor (`num_classes=0`), configurable from YAML."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

# Arguments only some architectures accept (ViTs take them, ResNets do not). They are passed when the
# model takes them and dropped, with a note in `dropped_kwargs`, when it does not, so one YAML override
# of `name` swaps a ViT for a ResNet.
_OPTIONAL_KWARGS = ("img_size", "patch_size")


class TimmBackbone(nn.Module):
    """A timm model returning pooled features `[B, num_features]` (class token for ViTs)."""

    def __init__(
        self,
        name: str = "vit_base_patch16_224",
        img_size: int | None = None,
        patch_size: int | None = None,
        drop_path_rate: float = 0.0,
        pretrained: bool = False,
        grad_checkpointing: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r}; see timm.list_models()")
        kwargs: dict[str, Any] = dict(model_kwargs or {})
        optional = {"img_size": img_size, "patch_size": patch_size}
        optional = {k: v for k, v in optional.items() if v is not None}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        self.name = name
        self.model, self.dropped_kwargs = _create(name, pretrained, kwargs, optional)
        # What timm needs to rebuild this architecture (used by `stablerep export`).
        self.timm_kwargs: dict[str, Any] = {**kwargs, **optional}
        self.num_features: int = int(self.model.num_features)
        self.channels_last = channels_last
        if grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:  # in place: parameter names (checkpoints, export) stay timm's
            self.model.compile()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)


def _create(
    name: str, pretrained: bool, kwargs: dict[str, Any], optional: dict[str, Any]
) -> tuple[nn.Module, list[str]]:
    """Create the model, dropping the optional size arguments the architecture rejects."""
    dropped: list[str] = []
    while True:
        try:
            model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs, **optional)
            return model, dropped
        except TypeError as err:
            rejected = [k for k in optional if k in str(err)]
            if not rejected:
                raise
            for key in rejected:
                optional.pop(key)
                dropped.append(key)
