"""Zero-shot inference: semantic relatedness transfer and prototype classification (ResT §3.3)."""

from .baselines import semantic_space_baseline
from .selection import SelectionResult, select_transfer_params
from .classifier import ZeroShotClassifier, seen_prototypes_from_loader
from .transfer import (
    composite_prototypes,
    cosine_similarity_matrix,
    nearest_prototype,
    transfer_assignment,
    transfer_assignment_closed_form,
)

__all__ = [
    "ZeroShotClassifier",
    "seen_prototypes_from_loader",
    "composite_prototypes",
    "cosine_similarity_matrix",
    "nearest_prototype",
    "transfer_assignment",
    "transfer_assignment_closed_form",
    "semantic_space_baseline",
    "SelectionResult",
    "select_transfer_params",
]
