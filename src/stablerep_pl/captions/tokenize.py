"""Captions → CLIP token ids for StableRep+'s text tower, with open_clip's tokenizer (offline).

open_clip ships CLIP's BPE vocabulary (49,408 tokens) in its wheel, so nothing is downloaded. It is
imported on first use, so that this package's caption tools need no torch until tokens are wanted
and DataLoader workers receive a cheap object.
"""

from __future__ import annotations

from typing import Any


class CaptionTokenizer:
    """`tokenizer(captions) -> LongTensor [n, context_length]`: start, BPE ids, end, zero padding;
    an over-long caption is cut and still ends with the end-of-text id (CLIP's convention)."""

    def __init__(self, context_length: int = 77) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
        self.context_length = context_length
        self._tokenizer: Any = None

    def __call__(self, captions: str | list[str]) -> Any:
        if self._tokenizer is None:
            try:
                from open_clip.tokenizer import SimpleTokenizer
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "CLIP tokens need open_clip_torch: pip install 'stablerep_pl[text]'"
                ) from err
            self._tokenizer = SimpleTokenizer(context_length=self.context_length)
        single = isinstance(captions, str)
        tokens = self._tokenizer([captions] if single else list(captions), context_length=self.context_length)
        return tokens[0] if single else tokens

    def __getstate__(self) -> dict:
        return {"context_length": self.context_length, "_tokenizer": None}
