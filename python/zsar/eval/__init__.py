"""Evaluation: zero-shot protocols and metrics (DESIGN.md §6).

Plots live in :mod:`zsar.eval.plots` (imported on demand: it loads matplotlib).
"""

from .metrics import harmonic_mean, mean_class_accuracy, top_k_accuracy
from .protocols import (
    E2E_REMOVAL_THRESHOLD,
    PROTOCOLS,
    ClassRemoval,
    embedding_predictor,
    evaluate_protocol,
    format_results_table,
    half_class_splits,
    remove_overlapping_classes,
    transfer_predictor,
    write_results_json,
)

__all__ = [
    "top_k_accuracy",
    "mean_class_accuracy",
    "harmonic_mean",
    "PROTOCOLS",
    "E2E_REMOVAL_THRESHOLD",
    "half_class_splits",
    "evaluate_protocol",
    "transfer_predictor",
    "embedding_predictor",
    "ClassRemoval",
    "remove_overlapping_classes",
    "write_results_json",
    "format_results_table",
]
