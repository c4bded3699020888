"""One run of the zero-shot pipeline, for every caller: build the model (seeded) → train → zero-shot
head (its parameters chosen by cross-validation over the seen classes when asked) → save.

:class:`Pipeline` holds the steps; ``zsar train`` runs them all (:func:`train_from_config`), the
AVCA GZSL recipe (:mod:`zsar.eval.recipes`) runs them per protocol stage and epoch, and the demos
(:mod:`zsar.demo`) run them one by one under their step timer. Evaluation reads the encodings
(:meth:`Pipeline.encode`) with :mod:`zsar.eval`::

    pipeline = Pipeline(config, videos.classes, embedder)
    train_spec, eval_spec = pipeline.clip_specs(stride=2)
    pipeline.fit(VideoClipDataset(videos, train_spec, ...))
    clf = pipeline.classifier(evaluation_loader(videos, eval_spec, audio=pipeline.model.inputs.audio),
                              clip_spec=eval_spec)
    pipeline.save(clf)                         # beside the trainer's last checkpoint
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..data import ClipSpec, VideoClipDataset, evaluation_loader
from ..data.decoders import fallback_decoder
from ..models import load_model, save_checkpoint
from ..models.checkpoint import resolve
from ..text import embedder_from_spec
from ..zeroshot import HEADS, EncodedSet, ZeroShotClassifier, encode_loader
from .config import TrainConfig
from .trainer import Trainer, build_model

__all__ = ["Pipeline", "train_from_config"]

log = logging.getLogger(__name__)


class Pipeline:
    """The steps of one run for ``config.model`` on the seen classes ``classes``.

    Args:
        config: the run (model, stages, seed, out_dir, the zero-shot head's ``head_settings`` and
            ``head_selection``).
        classes: the seen classes, which the training labels index.
        embedder: the label embedder of the zero-shot head (and of models that train towards label
            embeddings).
        model: an already built model (default: :func:`~zsar.train.trainer.build_model`, seeded).

    Attributes:
        model: the model (after :meth:`fit`, the trained one; after :meth:`use_checkpoint`, the
            checkpoint's).
        trainer: the :class:`Trainer` (None before :meth:`fit`).
    """

    def __init__(self, config: TrainConfig, classes: Sequence[str], embedder, model=None):
        self.config, self.classes, self.embedder = config, list(classes), embedder
        self.model = model if model is not None else build_model(config, self.classes, embedder)
        self.trainer: Trainer | None = None
        self.checkpoint: Path | None = None

    def clip_specs(self, eval_clips: int = 1, **overrides: Any) -> tuple[ClipSpec, ClipSpec]:
        """Training (random) and evaluation (``eval_clips`` centred clips) specs matching the model's
        inputs; ``overrides``: ``stride``, ``short_side``, ``size``, ``crop`` of the training spec."""
        train = self.model.inputs.clip_spec(train=True, **overrides)
        return train, replace(train, train=False, num_clips=eval_clips, crop=None)

    def fit(self, train_set, resume: bool = False, stop_after: int | None = None, val_set=None) -> dict[str, Any]:
        """Trains the model on ``train_set`` (a dataset of samples of the seen classes) with the
        :class:`Trainer`, creating it on the first call; see :meth:`Trainer.fit`."""
        if self.trainer is None:
            self.trainer = Trainer(self.config, train_set, self.classes, val_data=val_set, model=self.model,
                                   embedder=self.embedder)
        summary = self.trainer.fit(resume=resume, stop_after=stop_after)
        self.model = self.trainer.model
        self.checkpoint = self.trainer.out_dir / "checkpoints" / "last"
        return summary

    def use_checkpoint(self, which: str = "best") -> Path:
        """Continues with the trainer's ``best`` (or ``last``) checkpoint as the model; returns its folder."""
        self.checkpoint = resolve(self.trainer.out_dir / "checkpoints" / which)
        self.model = load_model(self.checkpoint, self.trainer.device)
        return self.checkpoint

    def encode(self, loader, desc: str = "encoding videos", with_seen_logits: bool = False) -> EncodedSet:
        """The model's representations of a loader's videos (:func:`zsar.zeroshot.encode_loader`)."""
        return encode_loader(self.model, loader, self.config.progress, desc=desc, with_seen_logits=with_seen_logits)

    def classifier(self, seen: EncodedSet | Any | None, validation: EncodedSet | Any | None = None,
                   **kwargs: Any) -> ZeroShotClassifier:
        """The zero-shot classifier of the model (:meth:`ZeroShotClassifier.fit`), with the config's
        ``head_settings``, chosen on the ``head_selection`` grid when the config has one.

        Args:
            seen: the seen classes' videos (encoded, or a loader; encoded only when the head or the
                selection needs them).
            validation: held-out videos of the seen classes to cross-validate on (default ``seen``).
            **kwargs: ``clip_spec``, ``temperature``.
        """
        selection = self.config.head_selection
        if seen is not None and not isinstance(seen, EncodedSet):
            needed = selection is not None or HEADS[self.model.zero_shot_head].needs_seen_representations
            seen = self.encode(seen, "seen-class representations") if needed else None
        if validation is not None and not isinstance(validation, EncodedSet):
            validation = self.encode(validation, "held-out videos of the seen classes") if selection else None
        return ZeroShotClassifier.fit(self.model, seen, self.classes, self.embedder,
                                      head_settings=self.config.head_settings, selection=selection,
                                      validation=validation, **kwargs)

    def save(self, clf: ZeroShotClassifier, directory: str | Path | None = None,
             metadata: dict[str, Any] | None = None) -> Path:
        """Saves the zero-shot classifier beside the model's checkpoint (the trainer's, by default),
        or the model and the classifier into ``directory``; returns the checkpoint folder."""
        if directory is None:
            if self.checkpoint is None:
                raise ValueError("the model has no checkpoint yet (fit first) and no directory was given")
            target = self.checkpoint
        else:
            target = save_checkpoint(directory, self.model, {"class_names": self.classes, **(metadata or {})})
        clf.save(target)
        return Path(target)


def train_from_config(config: TrainConfig, resume: bool = True, trust_pickle: bool = False) -> dict[str, Any]:
    """What ``zsar train`` runs: trains on ``config.data`` and saves a zero-shot checkpoint (the best
    checkpoint with its classifier, built from the training videos read with evaluation clips).

    Args:
        resume: continue an interrupted run in ``config.out_dir`` (False: start over, see
            :meth:`Trainer.fit`).
        trust_pickle: let ``config.embedder`` name a gensim pickle (see :func:`zsar.text.embedder_from_spec`).

    Returns:
        The trainer's summary plus ``checkpoint`` (the directory to give ``zsar predict``) and
        ``selection`` (how the head's settings were chosen).
    """
    if config.data is None:
        raise ValueError("the config has no `data` section (format, annotations, root): nothing to train on")
    videos = config.data.read()
    if len(videos.classes) < 2:
        raise ValueError(f"{config.data.annotations}: need at least 2 classes to train, found {len(videos.classes)}")
    # Fail before training, not after.
    embedder = embedder_from_spec(config.embedder, trust_pickle=trust_pickle, where="config key 'embedder'")
    pipeline = Pipeline(config, videos.classes, embedder)
    data = config.data
    train_spec, eval_spec = pipeline.clip_specs(stride=data.stride, short_side=data.short_side)
    audio = pipeline.model.inputs.audio
    train_set = VideoClipDataset(videos, train_spec, backend=fallback_decoder(data.backend), seed=config.seed,
                                 on_error=data.on_error, audio=audio, missing_audio=data.missing_audio)
    summary = pipeline.fit(train_set, resume=resume)
    if not pipeline.trainer.dist.is_main:
        return summary
    best = pipeline.use_checkpoint("best")
    seen = evaluation_loader(videos, eval_spec, config.batch_size, audio=audio, backend=data.backend,
                             on_error=data.on_error, missing_audio=data.missing_audio)
    clf = pipeline.classifier(seen, clip_spec=eval_spec)
    pipeline.save(clf)
    log.info("zero-shot checkpoint: %s", best)
    return {**summary, "checkpoint": str(best), "selection": clf.selection}
