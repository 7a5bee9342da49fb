"""One spelling and one key per caption, whichever path it takes (caption files, on-the-fly lists, shards)."""

from __future__ import annotations

import hashlib


def normalize_caption(caption: str) -> str:
    """One spelling per caption: runs of whitespace become one space, none at the ends.

    Every path (caption files for `stablerep render`, caption lists trained on the fly) normalises
    with this, so one caption always gets one key and hence the same image seeds.
    """
    return " ".join(str(caption).split())


def caption_key(caption: str) -> str:
    """Stable 16-hex-digit key of a caption's normalised text (same on every machine and Python run)."""
    return hashlib.blake2b(normalize_caption(caption).encode("utf-8"), digest_size=8).hexdigest()
