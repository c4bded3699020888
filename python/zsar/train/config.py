"""Training configuration (paper §4.1 defaults), as dataclasses that round-trip through YAML/JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config as _config
from ..data.config import DataConfig

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class StageConfig:
    """One training stage: optimiser and cosine learning-rate schedule over its epochs."""

    epochs: int
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float = 0.9  # SGD only

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class TrainConfig:
    """A ResT training run: stage 1 warms up the frame encoder alone, stage 2 trains everything."""

    model: str = "rest18"
    model_args: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    warmup: StageConfig = field(default_factory=lambda: StageConfig(150, "sgd", 0.01, 1e-4))
    joint: StageConfig = field(default_factory=lambda: StageConfig(50, "adamw", 1.5e-4, 0.05))
    batch_size: int = 16  # clips per process per step (the paper: 16 per GPU)
    grad_accum: int = 1  # optimiser step every `grad_accum` batches
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"  # auto: the local CUDA device when there is one
    num_workers: int = 0
    out_dir: str = "runs/rest"
    log_every: int = 10  # steps between metric log rows
    progress: bool = True
    data: DataConfig | None = None  # the training videos (for `zsar train`; the Python API takes datasets)
    # Label embedder for the zero-shot classifier saved with the model (zsar.text.embedder_from_spec).
    embedder: dict[str, Any] = field(default_factory=lambda: {"type": "sentence"})

    def __post_init__(self):
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _config.from_dict(cls, data)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] = ()) -> "TrainConfig":
        """From a YAML/JSON file (or the defaults when ``path`` is None) plus ``key=value`` overrides."""
        data = _config.load_file(path) if path is not None else {}
        return cls.from_dict(_config.apply_overrides(data, list(overrides)))

    def to_dict(self) -> dict[str, Any]:
        return _config.to_dict(self)

    def save(self, path: str | Path) -> None:
        _config.save(self, path)
