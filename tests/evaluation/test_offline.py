"""The offline protocol on real images: a random-init backbone on Fashion-MNIST."""

import pytest
import timm
import torch

from stablerep_pl.evaluation.eval_sets import FashionMNIST
from stablerep_pl.evaluation.offline import ProbeProtocol, run_protocol

needs_fmnist = pytest.mark.skipif(not FashionMNIST.available(), reason="dataset-fashion-mnist not installed")


def random_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=0)


@needs_fmnist
@pytest.mark.slow
def test_random_init_backbone_on_fashion_mnist_is_well_above_chance_and_deterministic() -> None:
    eval_set = FashionMNIST(image_size=32, train_limit=1000, test_limit=300)
    protocol = ProbeProtocol(epochs=5, cache_features=True, num_workers=0, few_shot_episodes=100)
    first = run_protocol(random_resnet(), eval_set, protocol, progress=False)
    assert first["linear"]["top1"] > 0.5 and first["knn"]["top1"] > 0.4  # chance: 0.1
    assert first["online_linear"]["top1"] > 0.5
    assert first["few_shot_5way_5shot"]["top1"] > 0.3  # chance: 0.2
    model = random_resnet()
    before = torch.get_rng_state()
    assert run_protocol(model, eval_set, protocol, progress=False) == first
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone


def test_protocol_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="epochs"):
        ProbeProtocol(epochs=0)
    with pytest.raises(ValueError, match="lrs"):
        ProbeProtocol(lrs=[])
