"""StableRep+'s text tower: open_clip's CLIP text transformer, causal, pooled at the end-of-text token.

Paper settings: 12 layers, width 512, 8 heads, context 77, CLIP BPE vocabulary of 49,408 tokens, a
final LayerNorm, features taken at the end-of-text position (the highest id in each row). Using
open_clip's module gives the standard CLIP parameter names (`token_embedding`,
`positional_embedding`, `transformer.resblocks.N.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj}`,
`ln_final`), the names the authors' StableRep+ checkpoints use. The projection into the shared
image-text space is the method's (`StableRepPlus.text_projection`), so none is built here.
"""

from __future__ import annotations

from typing import Literal

import torch
from open_clip.transformer import QuickGELU
from open_clip.transformer import TextTransformer as OpenClipTextTransformer
from torch import nn

CLIP_VOCAB_SIZE = 49408


class TextTransformer(OpenClipTextTransformer):
    """`forward(tokens [n, L]) -> [n, width]`; sizes configurable (tiny for tests, 12×512 for the recipe).

    `activation`: "gelu" (torch's exact GELU) or "quick_gelu" (x·σ(1.702x), OpenAI CLIP and the
    authors' StableRep+ text tower).
    """

    def __init__(
        self,
        vocab_size: int = CLIP_VOCAB_SIZE,
        context_length: int = 77,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        activation: Literal["gelu", "quick_gelu"] = "gelu",
    ) -> None:
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        if activation not in ("gelu", "quick_gelu"):
            raise ValueError(f"activation must be 'gelu' or 'quick_gelu', got {activation!r}")
        super().__init__(
            context_length=context_length, vocab_size=vocab_size, width=width, heads=heads, layers=layers,
            mlp_ratio=mlp_ratio, output_dim=None, act_layer=QuickGELU if activation == "quick_gelu" else nn.GELU,
        )  # fmt: skip
        self.num_features = width

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.num_pos:
            raise ValueError(f"tokens must be [n, <= {self.num_pos}], got {tuple(tokens.shape)}")
        if tokens.shape[1] < self.num_pos:  # open_clip's causal mask has the full context length; zero
            # padding after the end-of-text token changes nothing before it
            tokens = torch.nn.functional.pad(tokens, (0, self.num_pos - tokens.shape[1]))
        return super().forward(tokens)
