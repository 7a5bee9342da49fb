import open_clip
import pytest
import torch

from stablerep_pl.models.text import CaptionTokenizer, TextTransformer


def test_tokens_equal_open_clip_including_padding_and_truncation() -> None:
    texts = ["a red star on grass", "A Photo of a DOG at dawn!", "word " * 100]
    assert torch.equal(CaptionTokenizer()(texts), open_clip.tokenize(texts))


def test_pooled_at_end_of_text_and_causal() -> None:
    torch.manual_seed(0)
    model = TextTransformer(width=32, layers=2, heads=4).eval()
    tokens = CaptionTokenizer()(["a red star", "a blue ring on grass"])
    out = model(tokens)
    assert out.shape == (2, 32)
    # Tokens after the end-of-text position cannot change the pooled feature (causal mask).
    changed = tokens.clone()
    changed[:, -5:] = 1234
    torch.testing.assert_close(model(changed), out)
    # A token before it does.
    changed = tokens.clone()
    changed[0, 1] = 1234
    assert not torch.allclose(model(changed)[0], out[0])


def test_paper_size_and_errors() -> None:
    model = TextTransformer()  # 12 layers, width 512, 8 heads
    assert len(model.transformer.layers) == 12 and model.num_features == 512
    assert model.token_embedding.num_embeddings == 49408
    with pytest.raises(ValueError, match="divisible"):
        TextTransformer(width=30, heads=4)
    with pytest.raises(ValueError, match="tokens"):
        TextTransformer(width=8, layers=1, heads=2, context_length=4)(torch.zeros(1, 5, dtype=torch.long))
