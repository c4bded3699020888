"""Training: configs, the two-stage ResT trainer, checkpoints, distributed setup."""

from .checkpoint import load_model, save_checkpoint
from .config import StageConfig, TrainConfig
from .trainer import Trainer

__all__ = ["StageConfig", "TrainConfig", "Trainer", "load_model", "save_checkpoint"]
