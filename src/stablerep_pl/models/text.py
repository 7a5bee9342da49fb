"""CLIP-style text tower for StableRep+: causal transformer pooled at the end-of-text token.

Paper settings: 12 layers, width 512, 8 heads, context 77, CLIP BPE vocabulary of 49,408 tokens,
final LayerNorm, features taken at the end-of-text position (the highest token id in each row, as
in CLIP, since <|endoftext|> is the last id of the vocabulary).
"""

from __future__ import annotations

import torch
from torch import nn

from stablerep_pl.models.tokenizer import build_clip_tokenizer

CLIP_VOCAB_SIZE = 49408


class TextTransformer(nn.Module):
    """`forward(tokens [n, L]) -> [n, width]`; sizes configurable (tiny for tests, 12×512 for the recipe)."""

    def __init__(
        self,
        vocab_size: int = CLIP_VOCAB_SIZE,
        context_length: int = 77,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.context_length, self.num_features = context_length, width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            int(width * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        mask = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CLIP's initialisation: small normal embeddings."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(f"tokens must be [n, <= {self.context_length}], got {tuple(tokens.shape)}")
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = self.transformer(x, mask=self.causal_mask[:length, :length], is_causal=True)
        x = self.final_norm(x)
        end_of_text = tokens.argmax(dim=-1)
        return x[torch.arange(x.shape[0], device=x.device), end_of_text]


class CaptionTokenizer:
    """Captions → `[n, context_length]` CLIP token ids (start, BPE, end, zero padding), offline."""

    def __init__(self, context_length: int = 77) -> None:
        self.context_length = context_length
        self._tokenizer = None

    def __call__(self, captions: str | list[str]) -> torch.Tensor:
        if self._tokenizer is None:  # built lazily: cheap to pickle into DataLoader workers
            self._tokenizer = build_clip_tokenizer(self.context_length)
        single = isinstance(captions, str)
        texts = [captions] if single else list(captions)
        ids = self._tokenizer(texts, truncation=True, max_length=self.context_length).input_ids
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq)
        return out[0] if single else out

    def __getstate__(self) -> dict:
        return {"context_length": self.context_length, "_tokenizer": None}
