"""LinearProbeCallback + RunSummary inside a real (tiny) Lightning fit."""

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from stablerep_pl.augment.transforms import AugmentationConfig
from stablerep_pl.callbacks import LinearProbeCallback, RunSummary
from stablerep_pl.callbacks.feature_cache import SHARED_FEATURE_CACHE
from stablerep_pl.data.on_the_fly import GeneratorDataModule
from stablerep_pl.evaluation.eval_sets import ProceduralEvalSet
from stablerep_pl.evaluation.linear import fit_linear_probe
from stablerep_pl.generation.procedural import ProceduralGenerator
from stablerep_pl.methods import StableRep
from stablerep_pl.methods.optim import OptimConfig
from stablerep_pl.models import TimmBackbone


@pytest.fixture(scope="module")
def eval_set() -> ProceduralEvalSet:
    return ProceduralEvalSet(image_size=24, render_size=32, train_per_class=4, test_per_class=2)


def features_by_hand(
    model: StableRep, eval_set: ProceduralEvalSet
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The reference: every image through the backbone in eval mode, one batch per split, no cache."""
    was_training = model.backbone.training
    model.backbone.eval()
    out = []
    with torch.no_grad():
        for dataset in (eval_set.train_dataset(), eval_set.test_dataset()):
            images = torch.stack([dataset[i][0] for i in range(len(dataset))])
            out.append((model.backbone(images), dataset.labels))
    model.backbone.train(was_training)
    return out


def knn_top1_by_loops(train, test, num_classes: int, k: int, temperature: float) -> float:
    """Weighted kNN written out: cosine similarity, the k largest, votes exp(sim / T) summed per class."""
    (train_x, train_y), (test_x, test_y) = train, test
    train_x = torch.nn.functional.normalize(train_x.double(), dim=1)
    correct = 0
    for query, label in zip(torch.nn.functional.normalize(test_x.double(), dim=1), test_y.tolist()):
        sims = sorted(zip((train_x @ query).tolist(), train_y.tolist()), reverse=True)[:k]
        votes = [0.0] * num_classes
        for sim, y in sims:
            votes[y] += math.exp(sim / temperature)
        correct += max(range(num_classes), key=votes.__getitem__) == label
    return correct / len(test_y)


def test_probe_runs_at_start_every_n_epochs_and_at_the_end(
    tmp_path: Path, eval_set: ProceduralEvalSet, capsys: pytest.CaptureFixture
) -> None:
    L.seed_everything(0)
    data = GeneratorDataModule(
        ProceduralGenerator(size=32), num_captions=24, views=2, images_per_caption=3, batch_size=8,
        augmentation=AugmentationConfig(image_size=24), num_workers=0,
    )  # fmt: skip
    model = StableRep(
        TimmBackbone("resnet10t"), head_hidden_dim=16, head_out_dim=8, optim=OptimConfig(lr=1e-3)
    )
    probe = LinearProbeCallback(eval_set, every_n_epochs=2, steps=20)
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=logger, default_root_dir=tmp_path,
        callbacks=[probe, RunSummary()], enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert probe.baseline_result is not None and probe.last_result is not None
    # The last result is the final weights' score: recomputed from scratch, it is the same.
    train, test = features_by_hand(model, eval_set)
    assert probe.last_result == fit_linear_probe(*train, *test, eval_set.num_classes, steps=20)
    assert model.backbone.training  # the probe restores training mode
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    baseline = [r for r in rows if r.get("probe/procedural/baseline_top1")]
    probes = [r for r in rows if r.get("probe/procedural/top1")]
    assert len(baseline) == 1 and baseline[0]["step"] == "0"
    assert len(probes) == 2  # after epoch 2 (every_n_epochs) and at the end of epoch 3
    assert int(probes[0]["step"]) < int(probes[1]["step"])
    assert float(probes[1]["probe/procedural/top1"]) == pytest.approx(100 * probe.last_result.top1, abs=1e-3)
    out = capsys.readouterr().out
    assert "vs random-init baseline" in out and "tensorboard --logdir" in out


def test_probe_result_is_deterministic_for_a_fixed_backbone(eval_set: ProceduralEvalSet) -> None:
    torch.manual_seed(0)
    model = StableRep(TimmBackbone("resnet10t"), head_hidden_dim=16, head_out_dim=8)
    probe = LinearProbeCallback(eval_set, steps=30)
    results = []
    for _ in range(2):  # each call encodes the set afresh: nothing is served from the feature cache
        SHARED_FEATURE_CACHE.clear()
        misses = SHARED_FEATURE_CACHE.misses
        results.append(probe.probe(model))
        assert SHARED_FEATURE_CACHE.misses == misses + 1
    assert results[0] == results[1]
    # ... and both are the probe fitted on features computed by hand (eval mode, no cache).
    train, test = features_by_hand(model, eval_set)
    assert results[0] == fit_linear_probe(*train, *test, eval_set.num_classes, steps=30)
    with pytest.raises(ValueError, match="every_n_epochs"):
        LinearProbeCallback(eval_set, every_n_epochs=0)


def test_knn_callback_scores_frozen_features(eval_set: ProceduralEvalSet) -> None:
    from stablerep_pl.callbacks import KNNCallback

    torch.manual_seed(0)
    model = StableRep(TimmBackbone("resnet10t"), head_hidden_dim=16, head_out_dim=8)
    knn = KNNCallback(eval_set, k=3, temperature=0.1)
    SHARED_FEATURE_CACHE.clear()
    result = knn.probe(model)
    assert knn.prefix == "knn/procedural"
    expected = knn_top1_by_loops(
        *features_by_hand(model, eval_set), eval_set.num_classes, k=3, temperature=0.1
    )
    assert result.top1 == pytest.approx(expected, abs=1e-6)


def test_evaluation_does_not_change_the_training_rng(eval_set: ProceduralEvalSet) -> None:
    model = StableRep(TimmBackbone("resnet10t"), head_hidden_dim=16, head_out_dim=8)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    LinearProbeCallback(eval_set, steps=5).probe(model)
    assert torch.equal(torch.get_rng_state(), before)


def test_probe_and_knn_share_features_until_the_weights_change(eval_set: ProceduralEvalSet) -> None:
    from stablerep_pl.callbacks import KNNCallback
    from stablerep_pl.callbacks.feature_cache import SHARED_FEATURE_CACHE

    torch.manual_seed(0)
    model = StableRep(TimmBackbone("resnet10t"), head_hidden_dim=16, head_out_dim=8)
    encoded = []
    model.backbone.register_forward_hook(lambda _m, args, _o: encoded.append(len(args[0])))
    SHARED_FEATURE_CACHE.clear()
    LinearProbeCallback(eval_set, steps=5).probe(model)
    first = sum(encoded)
    KNNCallback(eval_set, k=3).probe(model)
    assert sum(encoded) == first == len(eval_set.train_dataset()) + len(eval_set.test_dataset())
    with torch.no_grad():
        next(model.backbone.parameters()).mul_(0.5)  # an optimiser step would do the same
    KNNCallback(eval_set, k=3).probe(model)
    assert sum(encoded) == 2 * first
    other = ProceduralEvalSet(image_size=24, render_size=32, train_per_class=4, test_per_class=2, seed=7)
    assert other.fingerprint() != eval_set.fingerprint()
