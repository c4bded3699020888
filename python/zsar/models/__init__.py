"""Models: the model contract, the registry (``create_model``), checkpoints, and the registered
models (each model's file registers its variants).

Every module of this folder is imported with the package, so a model's file registers its variants
without being named anywhere else: adding a model is adding its file (``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import AudioSpec, ModelInputs, TrainingStage, ZeroShotModel
from .checkpoint import CheckpointError, load_model, save_checkpoint
from .registry import (
    Variant,
    create_model,
    default_embedder_spec,
    list_models,
    needs_label_embeddings,
    register_model,
    register_variants,
)
from .rest import ResT, ResTConfig  # noqa: F401  (importing registers the ResT variants)
from .mzst import MZST, MZSTConfig  # noqa: F401  (importing registers the MZST variants)
from .feature_input import MZSTFeatures, MZSTFeaturesConfig  # noqa: F401  (registers mzst_features*, rest_features*)

__all__ = ["AudioSpec", "CheckpointError", "ModelInputs", "MZST", "MZSTConfig", "ResT", "ResTConfig",
           "TrainingStage",
           "ZeroShotModel", "create_model", "default_embedder_spec", "list_models", "load_model", "needs_label_embeddings", "register_model", "register_variants", "save_checkpoint", "Variant"]
__all__ += ["MZSTFeatures", "MZSTFeaturesConfig"]


def _import_model_files() -> None:
    """Imports every module of this folder not imported above (each registers its models)."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_model_files()
