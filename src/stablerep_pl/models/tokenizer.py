"""CLIP BPE tokenizer built offline from the vocabulary file shipped in the open_clip_torch wheel.

The hub is never contacted: the 49,408-token vocabulary is reconstructed from the BPE merges exactly
as CLIP builds it (256 byte symbols, the same with an end-of-word mark, the merges, two specials).
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2


def clip_bpe_path() -> Path:
    """Path of `bpe_simple_vocab_16e6.txt.gz` inside the installed open_clip package."""
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the CLIP vocabulary ships with open_clip_torch: pip install open_clip_torch"
        ) from err
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"CLIP BPE vocabulary not found at {path}")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from bytes to printable unicode symbols."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    with gzip.open(clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")[1 : NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges  # type: ignore[return-value]


def build_clip_tokenizer(model_max_length: int = 77):
    """A `transformers.CLIPTokenizer` identical in ids to CLIP's, without any download."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)
