import itertools

import numpy as np
import pytest

from stablerep_pl.captions.grammar import (
    BACKGROUNDS,
    COLOURS,
    OBJECTS,
    POSITIONS,
    SIZES,
    TEXTURES,
    CaptionAttributes,
    CaptionGrammar,
    compose_caption,
    parse_caption,
    procedural_captions,
)

FIELDS = ("object", "colour", "texture", "background", "size", "position")


def test_vocabulary() -> None:
    assert len(OBJECTS) >= 10 and len(set(OBJECTS)) == len(OBJECTS)
    assert len(COLOURS) >= 8 and len(TEXTURES) >= 4 and len(BACKGROUNDS) >= 6
    assert set(SIZES) == {"small", "medium", "large"}
    assert set(POSITIONS) == {"left", "right", "top", "bottom", "centre"}
    for rgb in COLOURS.values():
        assert len(rgb) == 3 and all(0 <= c <= 255 for c in rgb)
    # Every word maps to one attribute only, except colour names reused as plain backgrounds.
    words = [*OBJECTS, *COLOURS, *TEXTURES, *SIZES, *POSITIONS]
    assert len(set(words)) == len(words)


def test_compose_reads_naturally() -> None:
    attrs = CaptionAttributes("star", "red", "striped", "grass", "small", "left")
    assert compose_caption(attrs) == "a small red striped star on the left on a grass background"
    assert compose_caption(CaptionAttributes(object="star")) == "a star"
    assert compose_caption(CaptionAttributes(object="arrow", colour="orange")) == "an orange arrow"
    assert compose_caption(CaptionAttributes(object="hourglass")) == "an hourglass"
    assert (
        compose_caption(CaptionAttributes(object="ring", texture="plain", colour="blue"))
        == "a plain blue ring"
    )
    assert compose_caption(CaptionAttributes(colour="red")) == "a red shape"
    assert compose_caption(CaptionAttributes("heart", position="centre")) == "a heart in the centre"
    with pytest.raises(ValueError, match="valid"):
        compose_caption(CaptionAttributes(object="dog"))


def test_round_trip_every_single_value() -> None:
    vocab = dict(zip(FIELDS, (OBJECTS, tuple(COLOURS), TEXTURES, BACKGROUNDS, SIZES, POSITIONS), strict=True))
    for field, values in vocab.items():
        for value in values:
            attrs = CaptionAttributes(**{"object": "star", field: value})
            assert parse_caption(compose_caption(attrs)) == attrs


def test_round_trip_random_attributes() -> None:
    rng = np.random.default_rng(0)
    vocab = [
        (None, *OBJECTS),
        (None, *COLOURS),
        (None, *TEXTURES),
        (None, *BACKGROUNDS),
        (None, *SIZES),
        (None, *POSITIONS),
    ]
    for _ in range(500):
        attrs = CaptionAttributes(*(values[rng.integers(len(values))] for values in vocab))
        assert parse_caption(compose_caption(attrs)) == attrs


def test_round_trip_grammar_samples() -> None:
    for caption in CaptionGrammar(seed=1).sample(500):
        assert compose_caption(parse_caption(caption)) == caption


def test_colour_names_as_object_colour_and_background() -> None:
    for colour, background in itertools.product(("white", "black", "grey"), repeat=2):
        attrs = parse_caption(f"a {colour} star on a {background} background")
        assert (attrs.colour, attrs.background) == (colour, background)
    assert parse_caption("a black background with a white star") == CaptionAttributes(
        object="star", colour="white", background="black"
    )


def test_parse_is_forgiving() -> None:
    assert parse_caption("A BIG Red Star in the CENTER on a GRAY background!") == CaptionAttributes(
        object="star", colour="red", background="grey", size="large", position="centre"
    )
    assert parse_caption("two small gray circles, stripy, middle") == CaptionAttributes(
        object="circle", colour="grey", texture="striped", size="small", position="centre"
    )
    assert parse_caption("crosses at the top").object == "cross"
    assert parse_caption("a kite in the sky").background == "sky"
    assert parse_caption("starry night").object is None  # whole words only
    assert parse_caption("a photo of a dog at dawn") == CaptionAttributes()
    assert parse_caption("a red star and a blue ring") == CaptionAttributes(object="star", colour="red")


@pytest.mark.parametrize(
    "text", ["", "   ", "!!!", "ünïcødé 星 ★", "a" * 10_000, "background", "red background"]
)
def test_parse_never_raises(text: str) -> None:
    assert isinstance(parse_caption(text), CaptionAttributes)


def test_grammar_names_object_always_and_others_with_probability() -> None:
    grammar = CaptionGrammar(p_attribute=0.6, seed=0)
    parsed = [parse_caption(c) for c in grammar.sample(2000)]
    assert all(a.object in OBJECTS for a in parsed)
    for field in FIELDS[1:]:
        rate = np.mean([getattr(a, field) is not None for a in parsed])
        assert 0.55 < rate < 0.65, field
    assert {a.object for a in parsed} == set(OBJECTS)
    assert not any(a.colour is not None and a.colour == a.background for a in parsed)


def test_grammar_extremes_and_determinism() -> None:
    bare = [parse_caption(c) for c in CaptionGrammar(p_attribute=0.0).sample(50)]
    assert all(a == CaptionAttributes(object=a.object) for a in bare)
    full = [parse_caption(c) for c in CaptionGrammar(p_attribute=1.0).sample(50)]
    assert all(None not in (a.colour, a.texture, a.background, a.size, a.position) for a in full)
    assert CaptionGrammar(seed=3).sample(20) == CaptionGrammar(seed=3).sample(20)
    assert CaptionGrammar(seed=3).sample(20) != CaptionGrammar(seed=4).sample(20)
    grammar = CaptionGrammar(seed=3)
    assert grammar.sample(5, np.random.default_rng(9)) == grammar.sample(5, np.random.default_rng(9))


def test_sample_for_object_and_object_subset() -> None:
    captions = CaptionGrammar(seed=0).sample_for_object("heart", 30, np.random.default_rng(0))
    assert len(captions) == 30 and all(parse_caption(c).object == "heart" for c in captions)
    subset = CaptionGrammar(objects=["ring", "star"], seed=0).sample(100)
    assert {parse_caption(c).object for c in subset} == {"ring", "star"}


def test_grammar_validation() -> None:
    with pytest.raises(ValueError, match="circle"):
        CaptionGrammar(objects=["circle", "dog"])
    with pytest.raises(ValueError, match="valid objects"):
        CaptionGrammar().sample_for_object("dog", 3, np.random.default_rng(0))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p_attribute"):
            CaptionGrammar(p_attribute=p)


def test_procedural_captions_distinct_and_deterministic() -> None:
    captions = procedural_captions(300, seed=5)
    assert len(captions) == 300 and len(set(captions)) == 300
    assert captions == procedural_captions(300, seed=5)
    assert captions != procedural_captions(300, seed=6)
    assert procedural_captions(0) == []
    bare = procedural_captions(len(OBJECTS), p_attribute=0.0)
    assert {parse_caption(c).object for c in bare} == set(OBJECTS)
    with pytest.raises(ValueError, match="distinct"):
        procedural_captions(len(OBJECTS) + 1, p_attribute=0.0)
