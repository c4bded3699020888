"""Training: configs, the trainer of every registered model, the pipeline every run goes through
(:class:`Pipeline`), distributed setup, run-folder locking."""

from ..models.checkpoint import load_model, save_checkpoint
from .config import StageConfig, TrainConfig
from .lock import RunLockedError
from .pipeline import Pipeline, train_from_config
from .trainer import NonFiniteLossError, Trainer

__all__ = ["NonFiniteLossError", "Pipeline", "RunLockedError", "StageConfig", "TrainConfig", "Trainer", "load_model",
           "save_checkpoint", "train_from_config"]
