"""Evaluation: zero-shot protocols and metrics.

* :mod:`zsar.eval.protocols`: the registry of class-split protocols (ResT/E2E 0/50 and 0/100) and
  E2E class removal.
* :mod:`zsar.eval.gzsl`: GZSL/ZSL metrics with calibrated stacking (S, U, HM, ZSL, beta).
* :mod:`zsar.eval.avca`: the AVCA two-stage protocol (UCF/ActivityNet/VGGSound-GZSL) for any model.
* :mod:`zsar.eval.relatedness`: MZSL-50 semantic relatedness, buckets and score.
* :mod:`zsar.eval.runner`: 0/100 or 0/50 zero-shot accuracy of a dataset encoded once
  (:func:`zsar.zeroshot.encode_loader`), beside the semantic-space baseline and chance.

Imported on demand: :mod:`zsar.eval.plots` (it loads matplotlib) and :mod:`zsar.eval.recipes`
(the GZSL recipe and checkpoint evaluation of registered models, behind ``zsar gzsl`` and
``zsar eval --protocol gzsl``; it loads the trainer).
"""

from .avca import (
    AVCA_BENCHMARKS,
    GZSLEvalSet,
    avca_label_names,
    avca_stages,
    evaluate_gzsl,
    format_gzsl_table,
    run_avca_protocol,
)
from .gzsl import (
    DEFAULT_BETA_GRID,
    calibrate_beta,
    class_distances,
    gzsl_curve,
    gzsl_per_class_accuracy,
    gzsl_scores,
    per_class_accuracy,
)
from .metrics import harmonic_mean, mean_class_accuracy, top_k_accuracy
from .protocols import (
    E2E_REMOVAL_THRESHOLD,
    PROTOCOLS,
    ClassRemoval,
    ZeroShotProtocol,
    embedding_predictor,
    evaluate_protocol,
    format_results_table,
    get_protocol,
    half_class_splits,
    register_protocol,
    remove_overlapping_classes,
    transfer_predictor,
    write_results_json,
)
from .relatedness import (
    MZSL50_BUCKETS,
    bucket_counts,
    class_relatedness,
    default_reference_classes,
    format_class_removal,
    mzsl50_score,
    mzst_class_removal,
    relatedness_buckets,
    semantic_relatedness,
)

__all__ = [
    "top_k_accuracy",
    "mean_class_accuracy",
    "harmonic_mean",
    "PROTOCOLS",
    "ZeroShotProtocol",
    "get_protocol",
    "register_protocol",
    "E2E_REMOVAL_THRESHOLD",
    "half_class_splits",
    "evaluate_protocol",
    "transfer_predictor",
    "embedding_predictor",
    "ClassRemoval",
    "remove_overlapping_classes",
    "write_results_json",
    "format_results_table",
    "DEFAULT_BETA_GRID",
    "class_distances",
    "gzsl_scores",
    "gzsl_curve",
    "calibrate_beta",
    "gzsl_per_class_accuracy",
    "per_class_accuracy",
    "AVCA_BENCHMARKS",
    "avca_stages",
    "avca_label_names",
    "GZSLEvalSet",
    "evaluate_gzsl",
    "run_avca_protocol",
    "format_gzsl_table",
    "MZSL50_BUCKETS",
    "default_reference_classes",
    "semantic_relatedness",
    "relatedness_buckets",
    "bucket_counts",
    "class_relatedness",
    "mzsl50_score",
    "mzst_class_removal",
    "format_class_removal",
]
