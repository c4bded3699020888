"""Training: configs, the trainer of every registered model, distributed setup, run-folder locking."""

from ..models.checkpoint import load_model, save_checkpoint
from .config import StageConfig, TrainConfig
from .lock import RunLockedError
from .trainer import NonFiniteLossError, Trainer

__all__ = ["NonFiniteLossError", "RunLockedError", "StageConfig", "TrainConfig", "Trainer", "load_model",
           "save_checkpoint"]
