"""One rank of the 2-process gloo check of the evaluation callbacks (run by test_callbacks_distributed.py).

Usage: python callbacks_dist_worker.py RANK WORLD INIT_FILE OUT_DIR (see tests/gloo_workers.py)

Every rank builds the same seeded backbone and evaluation sets, runs the linear-probe and kNN
callbacks' `probe`, and the raw sharded feature extraction on sets with fewer items than a full
stride, and saves what it got plus how many images it encoded itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from stablerep_pl.callbacks import KNNCallback, LinearProbeCallback
from stablerep_pl.callbacks.feature_cache import SHARED_FEATURE_CACHE
from stablerep_pl.evaluation import extract_features_distributed
from stablerep_pl.evaluation.eval_sets import ProceduralEvalSet
from stablerep_pl.methods import StableRep
from stablerep_pl.models import TimmBackbone

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gloo_workers import gloo_worker_main


def build() -> tuple[StableRep, ProceduralEvalSet]:
    torch.manual_seed(0)
    model = StableRep(TimmBackbone("resnet10t"), head_hidden_dim=16, head_out_dim=8)
    eval_set = ProceduralEvalSet(image_size=24, render_size=32, train_per_class=3, test_per_class=2)
    return model, eval_set


def run() -> dict:
    model, eval_set = build()
    encoded = []
    model.backbone.register_forward_hook(lambda _m, args, _o: encoded.append(int(args[0].shape[0])))
    probe = LinearProbeCallback(eval_set, steps=40, batch_size=5).probe(model)
    knn = KNNCallback(eval_set, k=3, batch_size=5).probe(model)
    train, test = LinearProbeCallback(eval_set, batch_size=5).features(model.backbone, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    odd = TensorDataset(torch.randn(7, 4, generator=g), torch.arange(7))
    single = TensorDataset(torch.randn(1, 4, generator=g), torch.tensor([3]))
    weight = torch.randn(4, 3, generator=g)
    return {
        "probe": probe,
        "knn": knn,
        "train": train,
        "test": test,
        "encoded": sum(encoded),
        "cache_misses": SHARED_FEATURE_CACHE.misses,
        "odd": extract_features_distributed(lambda x: x @ weight, odd, batch_size=2),
        "single": extract_features_distributed(lambda x: x @ weight, single, batch_size=2),
        "inputs": {"odd": odd.tensors, "single": single.tensors, "weight": weight},
    }


if __name__ == "__main__":
    gloo_worker_main(lambda rank, world, extra: run())
