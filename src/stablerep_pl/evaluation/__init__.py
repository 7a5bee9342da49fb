"""Evaluation: labelled evaluation sets, frozen-feature extraction, linear and SGD probes, kNN, few-shot and the offline protocol."""

from stablerep_pl.evaluation.features import extract_features, extract_features_distributed
from stablerep_pl.evaluation.knn import knn_accuracy, knn_predict
from stablerep_pl.evaluation.linear import ProbeResult, fit_linear_probe

__all__ = [
    "ProbeResult",
    "extract_features",
    "extract_features_distributed",
    "fit_linear_probe",
    "knn_accuracy",
    "knn_predict",
]
