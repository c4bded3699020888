"""Models: the model contract, the registry (``create_model``), checkpoints, and the registered
models (ResT; each model's file registers its variants)."""

from __future__ import annotations

from .base import AudioSpec, ModelInputs, TrainingStage, ZeroShotModel
from .checkpoint import CheckpointError, load_model, save_checkpoint
from .registry import create_model, default_embedder_spec, list_models, needs_label_embeddings, register_model
from .rest import ResT, ResTConfig  # noqa: F401  (importing registers the ResT variants)
from .mzst import MZST, MZSTConfig  # noqa: F401  (importing registers mzst, mzst_tiny)

__all__ = ["AudioSpec", "CheckpointError", "ModelInputs", "MZST", "MZSTConfig", "ResT", "ResTConfig",
           "TrainingStage",
           "ZeroShotModel", "create_model", "default_embedder_spec", "list_models", "load_model", "needs_label_embeddings", "register_model", "save_checkpoint"]
