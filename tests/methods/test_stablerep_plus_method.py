import math

import pytest
import torch

from stablerep_pl.captions.tokenize import CaptionTokenizer
from stablerep_pl.losses import MultiPosConLoss, MultiPosImageTextLoss
from stablerep_pl.methods import StableRepPlus
from stablerep_pl.models import TextTransformer, TimmBackbone


def tiny() -> StableRepPlus:
    torch.manual_seed(0)
    return StableRepPlus(
        TimmBackbone("resnet10t"), TextTransformer(width=32, layers=1, heads=4), embed_dim=16,
        head_hidden_dim=32, head_out_dim=16,
    )  # fmt: skip


def batch(n: int = 3, m: int = 2) -> dict:
    captions = [f"a red star {i}" for i in range(n)]
    return {
        "images": torch.randn(n, m, 3, 32, 32), "caption_ids": torch.tensor([5, 2, 9][:n]),
        "tokens": CaptionTokenizer()(captions),
    }  # fmt: skip


def test_total_is_image_loss_plus_half_image_text_loss() -> None:
    model, b = tiny().eval(), batch()
    losses = model.compute_losses(b)
    out = model.embed(b["images"])
    labels = torch.tensor([int(b["caption_ids"][i]) for k in range(2) for i in range(3)])
    image = MultiPosConLoss(0.1)(out["projections"], labels)
    text = model.text_projection(model.text_encoder(b["tokens"]))
    it = MultiPosImageTextLoss()(
        model.image_projection(out["features"]), text, labels, b["caption_ids"], 1 / 0.07
    )
    torch.testing.assert_close(losses["loss"], image + 0.5 * it)
    torch.testing.assert_close(losses["logit_scale"], torch.tensor(1 / 0.07))


def test_logit_scale_is_clamped_to_100() -> None:
    model = tiny()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000))
    assert float(model.scale()) == pytest.approx(100.0)
    model.on_train_batch_end(None, None, 0)
    assert float(model.logit_scale) == pytest.approx(math.log(100))


def test_gradients_reach_both_towers_and_the_scale() -> None:
    model = tiny().train()
    model.compute_losses(batch())["loss"].backward()
    assert model.text_encoder.token_embedding.weight.grad.abs().sum() > 0
    assert model.backbone.model.conv1[0].weight.grad.abs().sum() > 0
    assert model.logit_scale.grad is not None and model.logit_scale.grad != 0


def test_missing_tokens_is_a_clear_error() -> None:
    b = batch()
    del b["tokens"]
    with pytest.raises(KeyError, match="text_tokens"):
        tiny().compute_losses(b)
