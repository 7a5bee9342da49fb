"""The caption grammar of the procedural world: vocabulary, composing, parsing and sampling captions.

Captions are plain English ("a small red striped star on the left on a grass background") so the same
text can be fed to a real text-to-image model. The procedural renderer parses them back with
`parse_caption`, which is forgiving: unknown words are ignored, so free text never fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

# Shapes that stay distinct under any rotation (no square/diamond pair) and at 32 px.
OBJECTS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "ring",
    "crescent",
    "arrow",
    "ellipse",
    "semicircle",
    "hourglass",
)
# Far apart in RGB (and in hue among the saturated ones) so small jitter never changes the nearest name.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (255, 130, 20),
    "yellow": (250, 230, 40),
    "green": (50, 170, 60),
    "cyan": (20, 200, 210),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "pink": (245, 120, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
}
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "gradient")
BACKGROUNDS: tuple[str, ...] = ("white", "black", "grey", "sky", "grass", "sand", "brick", "noise")
SIZES: tuple[str, ...] = ("small", "medium", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")

POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
GENERIC_OBJECT = "shape"  # the noun used when a caption names no object


def _lexicon(canonical: Sequence[str], synonyms: dict[str, str] | None = None) -> dict[str, str]:
    table = {word: word for word in canonical}
    table.update(synonyms or {})
    return table


_OBJECT_WORDS = _lexicon(OBJECTS, {"oval": "ellipse", "disc": "circle", "disk": "circle", "moon": "crescent"})
_COLOUR_WORDS = _lexicon(tuple(COLOURS), {"gray": "grey", "violet": "purple"})
_TEXTURE_WORDS = _lexicon(
    TEXTURES,
    {
        "solid": "plain",
        "stripy": "striped",
        "stripes": "striped",
        "spotted": "dotted",
        "dots": "dotted",
        "dotty": "dotted",
        "chequered": "checkered",
        "checked": "checkered",
        "checkerboard": "checkered",
        "shaded": "gradient",
    },
)
_SIZE_WORDS = _lexicon(SIZES, {"tiny": "small", "little": "small", "big": "large", "huge": "large"})
_POSITION_WORDS = _lexicon(POSITIONS, {"center": "centre", "middle": "centre", "central": "centre"})
# Backgrounds recognised anywhere in the text; colour-named backgrounds only right before "background".
_SCENE_WORDS = {
    "sky": "sky",
    "grass": "grass",
    "grassy": "grass",
    "sand": "sand",
    "sandy": "sand",
    "brick": "brick",
    "bricks": "brick",
    "noise": "noise",
    "noisy": "noise",
}
_BACKGROUND_WORDS = {**_SCENE_WORDS, "white": "white", "black": "black", "grey": "grey", "gray": "grey"}
_BACKGROUND_NOUNS = frozenset({"background", "backgrounds", "backdrop"})


@dataclass(frozen=True)
class CaptionAttributes:
    """What a caption says; None means the caption leaves that attribute open."""

    object: str | None = None
    colour: str | None = None
    texture: str | None = None
    background: str | None = None
    size: str | None = None
    position: str | None = None


_VOCABULARY: dict[str, Sequence[str]] = {
    "object": OBJECTS,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "background": BACKGROUNDS,
    "size": SIZES,
    "position": POSITIONS,
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" or word.startswith("hour") else "a"


def compose_caption(attrs: CaptionAttributes) -> str:
    """Natural English for `attrs`; omitted attributes are simply not mentioned."""
    for field in fields(attrs):
        value = getattr(attrs, field.name)
        if value is not None and value not in _VOCABULARY[field.name]:
            raise ValueError(f"unknown {field.name} {value!r}; valid: {', '.join(_VOCABULARY[field.name])}")
    words = [attrs.size] if attrs.size else []
    if attrs.texture == "plain":  # "a plain red star" reads better than "a red plain star"
        words.append("plain")
    if attrs.colour:
        words.append(attrs.colour)
    if attrs.texture and attrs.texture != "plain":
        words.append(attrs.texture)
    words.append(attrs.object or GENERIC_OBJECT)
    text = f"{_article(words[0])} {' '.join(words)}"
    if attrs.position:
        text += f" {POSITION_PHRASES[attrs.position]}"
    if attrs.background:
        text += f" on {_article(attrs.background)} {attrs.background} background"
    return text


def _lookup_object(token: str) -> str | None:
    for stem in (
        token,
        token[:-1] if token.endswith("s") else "",
        token[:-2] if token.endswith("es") else "",
    ):
        if stem in _OBJECT_WORDS:
            return _OBJECT_WORDS[stem]
    return None


def parse_caption(caption: str) -> CaptionAttributes:
    """Inverse of `compose_caption`, forgiving on free text: first mention of each attribute wins.

    Never raises on a string; words outside the vocabulary are ignored, so "a photo of a dog at
    dawn" parses to all-None attributes.
    """
    tokens = re.findall(r"[a-z]+", str(caption).lower())
    found: dict[str, str] = {}
    background_slots = set()
    for i, token in enumerate(tokens[:-1]):  # "<word> background" names the background explicitly
        if tokens[i + 1] in _BACKGROUND_NOUNS and token in _BACKGROUND_WORDS:
            background_slots.add(i)
            found.setdefault("background", _BACKGROUND_WORDS[token])
    tables = (
        ("colour", _COLOUR_WORDS),
        ("texture", _TEXTURE_WORDS),
        ("size", _SIZE_WORDS),
        ("position", _POSITION_WORDS),
        ("background", _SCENE_WORDS),
    )
    for i, token in enumerate(tokens):
        if i in background_slots:
            continue
        obj = _lookup_object(token)
        if obj is not None:
            found.setdefault("object", obj)
        for name, table in tables:
            if token in table:
                found.setdefault(name, table[token])
    return CaptionAttributes(**found)


class CaptionGrammar:
    """Samples captions: the object is always named, every other attribute with prob. `p_attribute`.

    Leaving attributes out is what makes the images of one caption differ in more than nuisances, like
    the open-ended prompts StableRep samples Stable Diffusion with.
    """

    def __init__(self, p_attribute: float = 0.6, objects: Sequence[str] | None = None, seed: int = 0) -> None:
        if not 0.0 <= p_attribute <= 1.0:
            raise ValueError(f"p_attribute must be in [0, 1], got {p_attribute}")
        self.objects = tuple(OBJECTS if objects is None else objects)
        if not self.objects:
            raise ValueError(f"objects must not be empty; valid: {', '.join(OBJECTS)}")
        for obj in self.objects:
            _check_object(obj)
        self.p_attribute = float(p_attribute)
        self.rng = np.random.default_rng(seed)

    def _attributes(self, obj: str, rng: np.random.Generator) -> CaptionAttributes:
        p = self.p_attribute
        chosen: dict[str, str | None] = {}
        for name in ("colour", "texture", "background", "size", "position"):
            options = list(_VOCABULARY[name])
            if name == "background" and chosen["colour"] in options:  # no white star on white
                options.remove(chosen["colour"])
            named = rng.random() < p
            value = options[int(rng.integers(len(options)))]
            chosen[name] = value if named else None
        return CaptionAttributes(object=obj, **chosen)

    def sample(self, n: int, rng: np.random.Generator | None = None) -> list[str]:
        """`n` captions (repeats possible) with uniformly drawn objects; uses the grammar's RNG by default."""
        rng = self.rng if rng is None else rng
        objects = [self.objects[int(i)] for i in rng.integers(len(self.objects), size=n)]
        return [compose_caption(self._attributes(obj, rng)) for obj in objects]

    def sample_for_object(self, obj: str, n: int, rng: np.random.Generator | None = None) -> list[str]:
        """`n` captions all naming `obj` (for class-labelled evaluation sets)."""
        _check_object(obj)
        rng = self.rng if rng is None else rng
        return [compose_caption(self._attributes(obj, rng)) for _ in range(n)]

    def num_distinct(self) -> int:
        """How many different captions this grammar can produce (0 < p < 1)."""
        counts = {name: len(values) for name, values in _VOCABULARY.items()}
        rest = (counts["texture"] + 1) * (counts["size"] + 1) * (counts["position"] + 1)
        same_name = len(set(COLOURS) & set(BACKGROUNDS))
        pairs = (counts["colour"] + 1) * (counts["background"] + 1) - same_name
        if self.p_attribute == 0.0:
            return len(self.objects)
        if self.p_attribute == 1.0:
            return (
                len(self.objects)
                * counts["texture"]
                * counts["size"]
                * counts["position"]
                * (counts["colour"] * counts["background"] - same_name)
            )
        return len(self.objects) * rest * pairs


def _check_object(obj: str) -> None:
    if obj not in OBJECTS:
        raise ValueError(f"unknown object {obj!r}; valid objects: {', '.join(OBJECTS)}")


def procedural_captions(num_captions: int, seed: int = 0, p_attribute: float = 0.6) -> list[str]:
    """`num_captions` distinct captions, the same list for the same seed.

    Distinct because a repeated caption would turn its own positives into negatives in the
    multi-positive loss. Raises ValueError when the grammar cannot produce that many.
    """
    if num_captions < 0:
        raise ValueError(f"num_captions must be >= 0, got {num_captions}")
    grammar = CaptionGrammar(p_attribute=p_attribute, seed=seed)
    if num_captions > grammar.num_distinct():
        raise ValueError(
            f"p_attribute={p_attribute} allows only {grammar.num_distinct()} distinct captions, "
            f"{num_captions} requested"
        )
    captions: dict[str, None] = {}
    drawn, budget = 0, 50 * num_captions + 10_000
    while len(captions) < num_captions:
        if drawn >= budget:
            raise ValueError(f"found only {len(captions)} distinct captions of {num_captions} requested")
        batch = max(64, 2 * (num_captions - len(captions)))
        for caption in grammar.sample(batch):
            captions.setdefault(caption, None)
            if len(captions) == num_captions:
                break
        drawn += batch
    return list(captions)
