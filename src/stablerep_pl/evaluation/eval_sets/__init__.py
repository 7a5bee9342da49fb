"""Labelled evaluation sets for probes: train/test splits of `(image tensor, label)` items.

Configs name them by these paths (`stablerep_pl.evaluation.eval_sets.ProceduralEvalSet`, ...).
"""

from stablerep_pl.evaluation.eval_sets.base import EvalSet, ImageListDataset, TransformedDataset
from stablerep_pl.evaluation.eval_sets.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FashionMNIST,
)
from stablerep_pl.evaluation.eval_sets.files import ImageFolderEvalSet, ShardEvalSet
from stablerep_pl.evaluation.eval_sets.procedural import ProceduralEvalSet

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "EvalSet",
    "FashionMNIST",
    "ImageFolderEvalSet",
    "ImageListDataset",
    "ProceduralEvalSet",
    "ShardEvalSet",
    "TransformedDataset",
]
