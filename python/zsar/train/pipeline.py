"""From a config to a zero-shot checkpoint: what ``zsar train`` runs.

Reads the training videos (:class:`~zsar.data.DataConfig`), builds the model, trains both
stages (:class:`Trainer`), then computes the seen-class prototypes with evaluation clips and
saves a :class:`~zsar.zeroshot.ZeroShotClassifier` beside the best checkpoint, so that
``zsar predict``/``zsar eval`` and ``ZeroShotClassifier.load`` work on it directly.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..data import ClipSpec, VideoClipDataset, VideoList, VideoLoader
from ..data.config import DataConfig
from ..models import create_model, load_model
from ..models.checkpoint import resolve
from ..text import embedder_from_spec
from ..zeroshot import ZeroShotClassifier
from .config import TrainConfig
from .trainer import Trainer

log = logging.getLogger(__name__)


def clip_specs(model, data: DataConfig, eval_clips: int = 1) -> tuple[ClipSpec, ClipSpec]:
    """Training (random) and evaluation (centred, ``eval_clips`` clips) specs matching the model."""
    train = model.inputs.clip_spec(stride=data.stride, short_side=data.short_side, train=True)
    return train, replace(train, train=False, num_clips=eval_clips)


def save_zero_shot(model, videos: VideoList, spec: ClipSpec, embedder, directory, *, batch_size: int = 8,
                   backend: str = "auto", on_error: str = "skip", missing_audio: str = "zeros",
                   progress: bool = True, head_settings: dict[str, Any] | None = None) -> ZeroShotClassifier:
    """The zero-shot classifier of a trained model (its head built from ``videos``, the seen classes,
    read with evaluation clips when the head needs them), saved in ``directory``."""
    loader = VideoLoader(videos, spec, batch_size, backend=backend, shuffle=False, num_shards=1, on_error=on_error,
                         audio=model.inputs.audio, missing_audio=missing_audio)
    clf = ZeroShotClassifier.from_loader(model, loader, videos.classes, embedder, progress=progress, open_set=True,
                                         head_settings=head_settings, clip_spec=spec)
    clf.save(directory)
    return clf


def train_from_config(config: TrainConfig, resume: bool = True, trust_pickle: bool = False) -> dict[str, Any]:
    """Train on ``config.data`` and save a zero-shot checkpoint; returns the trainer's summary plus
    ``checkpoint`` (the directory to give ``zsar predict``). ``resume``: continue an interrupted run
    in ``config.out_dir`` (False: start over, see :meth:`Trainer.fit`). ``trust_pickle``: let
    ``config.embedder`` name a gensim pickle (see :func:`zsar.text.embedder_from_spec`)."""
    if config.data is None:
        raise ValueError("the config has no `data` section (format, annotations, root): nothing to train on")
    videos = config.data.read()
    if len(videos.classes) < 2:
        raise ValueError(f"{config.data.annotations}: need at least 2 classes to train, found {len(videos.classes)}")
    # Fail before training, not after.
    embedder = embedder_from_spec(config.embedder, trust_pickle=trust_pickle, where="config key 'embedder'")
    torch.manual_seed(config.seed)
    model = create_model(config.model, class_names=videos.classes, label_embedder=embedder, **config.model_args)
    train_spec, eval_spec = clip_specs(model, config.data)
    train_data = VideoClipDataset(videos, train_spec, backend="pyav" if config.data.backend == "auto"
                                  else config.data.backend, seed=config.seed, on_error=config.data.on_error,
                                  audio=model.inputs.audio, missing_audio=config.data.missing_audio)
    trainer = Trainer(config, train_data, videos.classes, model=model)
    summary = trainer.fit(resume=resume)
    if not trainer.dist.is_main:
        return summary
    best = resolve(Path(config.out_dir) / "checkpoints" / "best")
    model = load_model(best, trainer.device)
    save_zero_shot(model, videos, eval_spec, embedder, best, batch_size=config.batch_size,
                   backend=config.data.backend, on_error=config.data.on_error,
                   missing_audio=config.data.missing_audio, progress=config.progress)
    log.info("zero-shot checkpoint: %s", best)
    return {**summary, "checkpoint": str(best)}
