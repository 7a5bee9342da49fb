import math

import pytest
import torch
import torch.nn.functional as F

from stablerep_pl.captions.tokenize import CaptionTokenizer
from stablerep_pl.losses import MultiPosConLoss
from stablerep_pl.methods import StableRepPlus
from stablerep_pl.methods.stablerep_plus import project
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


def test_total_is_image_loss_plus_half_of_both_image_text_directions() -> None:
    """The paper's and the authors' default (w1 = w2 = 1): L_image + 0.5 · (L_i→t + L_t→i), each
    direction written out here with its targets (an image's caption; a caption's m images, uniform)."""
    model, b = tiny().eval(), batch()
    losses = model.compute_losses(b)
    out = model.embed(b["images"])
    labels = torch.tensor([int(b["caption_ids"][i]) for k in range(2) for i in range(3)])
    image = MultiPosConLoss(0.1)(out["projections"], labels)
    v = F.normalize(model.image_projection(out["features"]), dim=-1)
    t = F.normalize(model.text_projection(model.text_encoder(b["tokens"])), dim=-1)
    logits = v @ t.T / 0.07  # [6 images, 3 captions]
    i2t = F.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1, 2]))
    t2i = -(torch.tensor([[1.0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1]]) / 2
            * F.log_softmax(logits.T, dim=-1)).sum(-1).mean()  # fmt: skip
    torch.testing.assert_close(losses["loss"], image + 0.5 * (i2t + t2i))
    torch.testing.assert_close(losses["image_text_loss"], (i2t + t2i) / 2)
    torch.testing.assert_close(losses["logit_scale"], torch.tensor(1 / 0.07))
    # The weights are the authors' w1 and w2: loss = w1 · image + w2 · (i2t + t2i) / 2.
    model.image_loss_weight, model.image_text_weight = 0.5, 2.0
    torch.testing.assert_close(model.compute_losses(b)["loss"], 0.5 * image + (i2t + t2i))


def test_mlp_projection_is_the_authors_mlp_with_per_view_batchnorm() -> None:
    """`projection_type: mlp` is their `vl_projection: mlp`: Linear-BN-ReLU ×2, Linear; images per view."""
    torch.manual_seed(0)
    model = StableRepPlus(
        TimmBackbone("resnet10t"), TextTransformer(width=32, layers=1, heads=4), embed_dim=16,
        head_hidden_dim=32, head_out_dim=16, projection_type="mlp",
    ).train()  # fmt: skip
    kinds = [type(m).__name__ for m in model.image_projection.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert model.text_projection.mlp[0].in_features == 32 and model.text_projection.mlp[-1].out_features == 16
    features = torch.cat([torch.randn(3, 512), 5 + 3 * torch.randn(3, 512)])  # 2 views, different statistics
    seen = []
    hook = model.image_projection.mlp[1].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    with torch.no_grad():
        projected = project(model.image_projection, features, num_views=2)
    hook.remove()
    assert seen == [3, 3]  # BatchNorm saw each view's 3 rows on its own
    with torch.no_grad():
        separately = torch.cat(
            [model.image_projection.mlp(features[:3]), model.image_projection.mlp(features[3:])]
        )
    torch.testing.assert_close(projected, separately)


def test_logit_scale_is_clamped_to_between_1_and_100() -> None:
    """As the authors' `logit_scale.data.clamp_(0, 4.6052)` after every step."""
    model = tiny()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000))
    assert model.scale().item() == pytest.approx(100.0)
    model.on_train_batch_end(None, None, 0)
    assert float(model.logit_scale) == pytest.approx(math.log(100))
    with torch.no_grad():
        model.logit_scale.fill_(-2.0)
    assert model.scale().item() == pytest.approx(1.0)
    model.on_train_batch_end(None, None, 0)
    assert float(model.logit_scale) == 0.0


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
