"""Zero-shot inference: encoding a loader once (:func:`encode_loader`), heads that build class
matrices from label text (ResT's semantic transfer, MZST's semantic embedding), the classifier that
serves them and builds them (:meth:`ZeroShotClassifier.fit`, where a head's settings are chosen),
cross-validation of the transfer parameters (ResT §4.1) and baselines."""

from .baselines import semantic_space_baseline, semantic_space_scores
from .classifier import ZeroShotClassifier
from .encoding import EncodedSet, encode_loader
from .heads import (
    HEADS,
    PrototypeTransferHead,
    SemanticEmbeddingHead,
    ZeroShotHead,
    class_means,
)
from .selection import HeadSelection, SelectionResult, select_transfer_params
from .transfer import (
    composite_prototypes,
    cosine_similarity_matrix,
    nearest_prototype,
    transfer_assignment,
    transfer_assignment_closed_form,
)

__all__ = [
    "HEADS",
    "PrototypeTransferHead",
    "SemanticEmbeddingHead",
    "ZeroShotClassifier",
    "ZeroShotHead",
    "class_means",
    "EncodedSet",
    "encode_loader",
    "HeadSelection",
    "composite_prototypes",
    "cosine_similarity_matrix",
    "nearest_prototype",
    "transfer_assignment",
    "transfer_assignment_closed_form",
    "semantic_space_baseline",
    "semantic_space_scores",
    "SelectionResult",
    "select_transfer_params",
]
