"""Training configuration, as dataclasses that round-trip through YAML/JSON; stage defaults come from
the model (ResT: paper §4.1)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import config as _config
from ..data.config import DataConfig
from ..models.base import TrainingStage
from ..models.registry import default_embedder_spec
from ..runtime import (HOST_SYNC, PRECISIONS, SWITCHES, RuntimeSettings, batch_size_file, device_name,
                       recorded_batch_size, resolve_device)
from ..zeroshot.selection import HeadSelection

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")  # learning rate over a stage: cosine decay to 0, or fixed (the MZST paper)
NONFINITE = ("error", "skip")


def _check_number(key: str, value, low: float | None = None, *, strict: bool = False) -> None:
    """Finite and above ``low`` (``> low`` when ``strict``), or a one-line ValueError naming the key."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ValueError(f"config key {key!r} must be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"config key {key!r} must be {'>' if strict else '>='} {low:g}, got {value!r}")


@dataclass
class StageConfig:
    """Overrides of one training stage's optimiser and learning-rate schedule; None keeps the model's
    default (:meth:`zsar.models.ZeroShotModel.training_stages`). ``schedule``: ``"cosine"`` (decay to
    0 over the stage) or ``"constant"``."""

    epochs: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None  # SGD only
    schedule: str | None = None

    def __post_init__(self):
        if self.epochs is not None and self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _check_number("lr", self.lr, 0.0, strict=True)
        _check_number("weight_decay", self.weight_decay, 0.0)
        _check_number("momentum", self.momentum, 0.0)

    def resolve(self, stage: TrainingStage) -> "StageConfig":
        """These overrides over the model's defaults for ``stage``: every field set."""
        defaults = {"epochs": stage.epochs, "optimizer": stage.optimizer, "lr": stage.lr,
                    "weight_decay": stage.weight_decay, "momentum": stage.momentum, "schedule": stage.schedule}
        return StageConfig(**{k: (v if getattr(self, k) is None else getattr(self, k)) for k, v in defaults.items()})


@dataclass
class TrainConfig:
    """A training run of any registered model: its stages (:meth:`ZeroShotModel.training_stages`,
    e.g. ResT's ``warmup`` then ``joint``) run in order, each with the model's default optimiser and
    schedule unless ``stages`` overrides them (``stages.joint.lr=1e-4``)."""

    model: str = "rest18"
    model_args: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    stages: dict[str, StageConfig] = field(default_factory=dict)  # stage name -> overrides
    # clips per process per step (the paper: 16 per GPU); "auto": the training batch size `zsar bench model
    # --find-batch-size` recorded for this model, device and precision (zsar.runtime), else 16
    batch_size: int | str = 16
    grad_accum: int = 1  # optimiser step every `grad_accum` batches
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    # GPU defaults (zsar.runtime.RuntimeSettings), each "auto" (on for CUDA, off on the CPU), "on" or "off":
    channels_last: str = "auto"  # NHWC 2D frame encoders (ResT's ResNets)
    compile: str = "auto"  # torch.compile of the 2D frame encoders' trunks
    pin_memory: str = "auto"  # pinned host batches, non-blocking copies
    # when the trainer reads device values (non-finite-loss check, logged losses): "every_step" (the
    # CPU's auto: a non-finite loss stops at its step), "log_steps" (CUDA's auto: no host sync between)
    host_sync: str = "auto"
    grad_clip: float | None = None
    nonfinite_loss: str = "error"  # "error": stop at once, naming epoch and step; "skip": skip the step
    seed: int = 0
    device: str = "auto"  # auto: the local CUDA device when there is one
    num_workers: int = 0
    out_dir: str = "runs/rest"
    log_every: int = 10  # steps between metric log rows
    progress: bool = True
    data: DataConfig | None = None  # the training videos (for `zsar train`; the Python API takes datasets)
    # Label embedder for the zero-shot classifier saved with the model (zsar.text.embedder_from_spec);
    # None: the model's default (zsar.models.default_embedder_spec), see embedder_spec().
    embedder: dict[str, Any] | None = None
    # phi(s_v) for models with a semantic loss (MZST's Eq. 4): a video_id,video_label CSV (an annotation
    # column, or the cache), and/or the torchvision video classifier that fills it once per video
    # (a weights enum name, e.g. MViT_V2_S_Weights.KINETICS400_V1; see zsar.models.video_labels).
    video_labels: str | None = None
    video_classifier: str | None = None

    def embedder_spec(self) -> dict[str, Any]:
        """``embedder``, or the registered default of ``model`` when it is None."""
        return dict(self.embedder) if self.embedder is not None else default_embedder_spec(self.model)
    # The zero-shot head saved with the model: its settings (ResT: k, theta, rho), or a grid to choose
    # them on by cross-validation over the seen classes (ResT §4.1; `head_selection: {}` is the default grid).
    head_settings: dict[str, Any] = field(default_factory=dict)
    head_selection: HeadSelection | None = None

    def __post_init__(self):
        self.stages = {name: (_config.from_dict(StageConfig, value, prefix=f"stages.{name}.")
                              if isinstance(value, dict) else value) for name, value in self.stages.items()}
        for name, value in self.stages.items():
            if not isinstance(value, StageConfig):
                raise TypeError(f"config key 'stages.{name}': expected a mapping of stage settings, got {value!r}")
        if self.batch_size == "auto":
            self.batch_size = self._recorded_batch_size()
        elif isinstance(self.batch_size, str):
            raise TypeError(f"config key 'batch_size': expected int or 'auto', got {self.batch_size!r}")
        for key in ("batch_size", "grad_accum", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"config key {key!r} must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ValueError(f"config key 'num_workers' must be >= 0, got {self.num_workers}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for key in ("channels_last", "compile", "pin_memory"):
            if getattr(self, key) not in SWITCHES:
                raise ValueError(f"config key {key!r} must be one of {SWITCHES}, got {getattr(self, key)!r}")
        if self.host_sync not in HOST_SYNC:
            raise ValueError(f"config key 'host_sync' must be one of {HOST_SYNC}, got {self.host_sync!r}")
        if self.nonfinite_loss not in NONFINITE:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE}, got {self.nonfinite_loss!r}")
        _check_number("grad_clip", self.grad_clip, 0.0, strict=True)
        if self.device != "auto":
            try:
                device = torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"config key 'device': {self.device!r} is not a device (auto, cpu, cuda, cuda:N)") from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"config key 'device' is {self.device!r} but this machine has no CUDA device")
            if device.type not in ("cpu", "cuda"):
                raise ValueError(f"config key 'device' must be auto, cpu or cuda[:N], got {self.device!r}")

    def runtime(self, device: torch.device | None = None) -> RuntimeSettings:
        """The run's :class:`~zsar.runtime.RuntimeSettings` on ``device`` (default: ``device``'s)."""
        return RuntimeSettings.for_device(device if device is not None else self.device, precision=self.precision,
                                          channels_last=self.channels_last, compile=self.compile,
                                          pin_memory=self.pin_memory, host_sync=self.host_sync)

    def _recorded_batch_size(self) -> int:
        device = resolve_device(self.device)
        precision = "bf16" if self.runtime(device).autocast_dtype is not None else "fp32"
        recorded = recorded_batch_size(self.model, device_name(device), "train", precision)
        if recorded is None:
            log.warning("batch_size: auto: no batch size recorded for %s on %s (%s, %s); using 16 (record one with "
                        "`zsar bench model --model %s --find-batch-size`)", self.model, device_name(device),
                        precision, batch_size_file(), self.model)
            return 16
        return recorded

    def stage_plan(self, stages: list[TrainingStage]) -> list[tuple[TrainingStage, StageConfig]]:
        """The model's stages with these overrides applied.

        Raises:
            ValueError: ``stages`` names a stage the model does not have.
        """
        names = [s.name for s in stages]
        unknown = sorted(set(self.stages) - set(names))
        if unknown:
            raise ValueError(f"config key 'stages' names {unknown}, but model {self.model!r} trains the stages {names}")
        return [(s, self.stages.get(s.name, StageConfig()).resolve(s)) for s in stages]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        moved = sorted(k for k in ("warmup", "joint") if k in data)
        if moved:  # the layout before stages came from the model
            raise ValueError(f"config keys {moved} now live under 'stages' (e.g. stages: {{{moved[0]}: {{epochs: 5}}}}, "
                             f"or stages.{moved[0]}.epochs=5)")
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
