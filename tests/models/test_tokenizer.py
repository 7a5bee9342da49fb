import open_clip

from stablerep_pl.models.tokenizer import build_clip_tokenizer


def test_ids_equal_open_clip_tokenizer() -> None:
    ours = build_clip_tokenizer()
    reference = open_clip.tokenize  # open_clip's own SimpleTokenizer, independent implementation
    for text in ["a small red striped star on the left", "A Photo of a DOG, at dawn!", "naïve café"]:
        ids = ours(text, padding="max_length", max_length=77, truncation=True).input_ids
        expected = reference([text])[0].tolist()
        n = sum(1 for i in expected if i != 0)
        assert ids[:n] == expected[:n]
    assert len(ours) == 49408
