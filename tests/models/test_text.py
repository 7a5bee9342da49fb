import pytest
import torch

from stablerep_pl.captions.tokenize import CaptionTokenizer
from stablerep_pl.models.text import TextTransformer

START, END = 49406, 49407


def test_tokens_are_clip_ids_with_padding_and_truncation() -> None:
    """Against CLIP's published ids ("a" 320, "red" 736, "star" 1565), not against open_clip itself."""
    tokens = CaptionTokenizer()(["a red star", "word " * 100])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    assert tokens[0, :5].tolist() == [START, 320, 736, 1565, END] and not tokens[0, 5:].any()
    assert tokens[1, 0] == START and tokens[1, -1] == END  # cut, still ended
    short = CaptionTokenizer(context_length=4)("a red star on grass")
    assert short.tolist() == [START, 320, 736, END]


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
    # Shorter token rows (the end token at the same place) give the same features.
    torch.testing.assert_close(model(tokens[:, :10]), out)


def test_paper_size_and_errors() -> None:
    model = TextTransformer()  # 12 layers, width 512, 8 heads
    assert len(model.transformer.resblocks) == 12 and model.num_features == 512
    assert model.token_embedding.num_embeddings == 49408
    with pytest.raises(ValueError, match="divisible"):
        TextTransformer(width=30, heads=4)
    with pytest.raises(ValueError, match="tokens"):
        TextTransformer(width=8, layers=1, heads=2, context_length=4)(torch.zeros(1, 5, dtype=torch.long))


def test_quick_gelu_is_the_clip_activation() -> None:
    torch.manual_seed(0)
    quick = TextTransformer(width=16, layers=1, heads=2, activation="quick_gelu")
    x = torch.linspace(-3, 3, 7)
    activation = quick.transformer.resblocks[0].mlp.gelu
    torch.testing.assert_close(activation(x), x * torch.sigmoid(1.702 * x))
