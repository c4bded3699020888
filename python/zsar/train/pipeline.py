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
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..data import ClipSpec, VideoClipDataset, VideoList, evaluation_loader
from ..data.decoders import fallback_decoder
from ..data.formats import video_format
from ..data.video_labels import WithVideoLabels, embed_video_labels, read_video_labels
from ..models import load_model, save_checkpoint
from ..models.checkpoint import replace_checkpoint, resolve
from ..models.video_labels import VideoLabeler, label_videos
from ..text import embedder_from_spec
from ..zeroshot import HEADS, EncodedSet, ZeroShotClassifier, encode_loader
from ..zeroshot.classifier import SETTINGS_FILE as ZERO_SHOT_SETTINGS
from .config import TrainConfig
from .trainer import Trainer, build_model

__all__ = ["Pipeline", "first_per_class", "train_from_config"]

log = logging.getLogger(__name__)

#: Where a run into a finished run's folder saves its best epochs until it is complete.
STAGED_BEST = "best.next"
#: Training videos per class that ``zsar train`` encodes for the open-set calibration of a head that
#: needs no seen-class representations (MZST's); a head that does (ResT's) calibrates on all of them.
OPEN_SET_VIDEOS_PER_CLASS = 10


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
        # before any training: a misspelt or invalid setting would otherwise fail only at the end
        HEADS[self.model.zero_shot_head].check_settings(config.head_settings, "config key 'head_settings'")
        self.trainer: Trainer | None = None
        self.checkpoint: Path | None = None

    def clip_specs(self, eval_clips: int | None = None, **overrides: Any) -> tuple[ClipSpec, ClipSpec]:
        """Training (random) and evaluation specs matching the model's inputs (frames, size, pixel
        normalisation). Evaluation takes the model's own views (``inputs.eval_clips`` x ``eval_crop``,
        e.g. MZST's 4 clips x 3 crops), or ``eval_clips`` centred clips when given. ``overrides``:
        ``stride``, ``short_side``, ``size``, ``crop`` of the training spec."""
        train = self.model.inputs.clip_spec(train=True, **overrides)
        views = {} if eval_clips is None else {"num_clips": eval_clips, "crop": "center"}
        shared = {k: v for k, v in overrides.items() if k != "crop"}
        return train, self.model.inputs.clip_spec(**shared, **views)

    def fit(self, train_set, resume: bool = False, stop_after: int | None = None, val_set=None,
            best_name: str = "best") -> dict[str, Any]:
        """Trains the model on ``train_set`` (a dataset of samples of the seen classes) with the
        :class:`Trainer`, creating it on the first call; see :meth:`Trainer.fit`. ``best_name``:
        the folder under ``checkpoints/`` the best epoch goes to (:attr:`Trainer.best_name`)."""
        if self.trainer is None:
            self.trainer = Trainer(self.config, train_set, self.classes, val_data=val_set, model=self.model,
                                   embedder=self.embedder)
        self.trainer.best_name = best_name
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
                   calibration: EncodedSet | Any | None = None, **kwargs: Any) -> ZeroShotClassifier:
        """The zero-shot classifier of the model (:meth:`ZeroShotClassifier.fit`), with the config's
        ``head_settings``, chosen on the ``head_selection`` grid when the config has one, and its
        open-set calibration (:mod:`zsar.zeroshot.open_set`).

        Args:
            seen: the seen classes' videos (encoded, or a loader; encoded only when the head or the
                selection needs them).
            validation: held-out videos of the seen classes to cross-validate on (default ``seen``).
            calibration: videos of the seen classes (encoded, or a loader) to fit the open-set
                calibration on (default: ``seen`` when it is encoded; a head that needs no seen
                representations, such as MZST's, is calibrated only on these, see
                :meth:`open_set_sample`).
            **kwargs: ``clip_spec``, ``temperature``.
        """
        selection = self.config.head_selection
        if calibration is not None and not isinstance(calibration, EncodedSet):
            calibration = self.encode(calibration, "seen-class videos for the open-set calibration")
        if seen is not None and not isinstance(seen, EncodedSet):
            needed = selection is not None or HEADS[self.model.zero_shot_head].needs_seen_representations
            seen = self.encode(seen, "seen-class representations") if needed else None
        if validation is not None and not isinstance(validation, EncodedSet):
            validation = self.encode(validation, "held-out videos of the seen classes") if selection else None
        return ZeroShotClassifier.fit(self.model, seen, self.classes, self.embedder,
                                      head_settings=self.config.head_settings, selection=selection,
                                      validation=validation, calibration=calibration, **kwargs)

    def open_set_sample(self, videos: VideoList) -> VideoList | None:
        """The training videos to fit the open-set calibration on when :meth:`classifier` does not
        encode them anyway: for a head that needs no seen representations (MZST's), the first
        :data:`OPEN_SET_VIDEOS_PER_CLASS` of each class; None for one that does (ResT's: all of them)."""
        if HEADS[self.model.zero_shot_head].needs_seen_representations or self.config.head_selection is not None:
            return None
        return first_per_class(videos, OPEN_SET_VIDEOS_PER_CLASS)[0]

    def save(self, clf: ZeroShotClassifier, directory: str | Path | None = None,
             metadata: dict[str, Any] | None = None) -> Path:
        """Saves the zero-shot classifier beside the model's checkpoint (the trainer's, by default),
        or the model and the classifier into ``directory``; returns the checkpoint folder."""
        if directory is None:
            if self.checkpoint is None:
                raise ValueError("the model has no checkpoint yet (fit first) and no directory was given")
            return Path(clf.save(self.checkpoint))
        # the model and the classifier replace the folder together
        return Path(save_checkpoint(directory, self.model, {"class_names": self.classes, **(metadata or {})},
                                    add_files=clf.write_files))


def first_per_class(videos: VideoList, first: int) -> tuple[VideoList, VideoList]:
    """(the first ``first`` videos of each class, the others), in list order."""
    counts: dict[int, int] = {}
    head, tail = [], []
    for record in videos:
        counts[record.label] = counts.get(record.label, 0) + 1
        (head if counts[record.label] <= first else tail).append(record)
    return VideoList(head, videos.classes), VideoList(tail, videos.classes)


def with_video_labels(train_data, videos: VideoList, config: TrainConfig, embedder) -> WithVideoLabels:
    """``train_data`` whose samples carry phi(s_v): the labels of ``config.video_labels`` (a CSV), the
    missing ones classified once by ``config.video_classifier`` and cached in that CSV (default
    ``out_dir/video_labels.csv``), embedded by the same ``embedder`` as the classes."""
    cache = Path(config.video_labels or Path(config.out_dir) / "video_labels.csv")
    if config.video_classifier:
        cache.parent.mkdir(parents=True, exist_ok=True)
        labels = label_videos(videos, cache, VideoLabeler(config.video_classifier), progress=config.progress)
    else:
        labels = read_video_labels(cache)
    log.info("phi(s_v) for %d of %d training videos (%s)", len(labels), len(videos), cache)
    return WithVideoLabels(train_data, embed_video_labels(labels, embedder))


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
    video_format(config.data.format, "data.format", "zsar train")
    videos = config.data.read()
    if len(videos.classes) < 2:
        raise ValueError(f"{config.data.annotations}: need at least 2 classes to train, found {len(videos.classes)}")
    # Fail before training, not after.
    embedder = embedder_from_spec(config.embedder_spec(), trust_pickle=trust_pickle, where="config key 'embedder'")
    pipeline = Pipeline(config, videos.classes, embedder)
    data = config.data
    train_spec, eval_spec = pipeline.clip_specs(stride=data.stride, short_side=data.short_side)
    audio = pipeline.model.inputs.audio
    train_set = VideoClipDataset(videos, train_spec, backend=fallback_decoder(data.backend), seed=config.seed,
                                 on_error=data.on_error, audio=audio, missing_audio=data.missing_audio)
    if config.video_labels or config.video_classifier:
        train_set = with_video_labels(train_set, videos, config, embedder)
    root = Path(config.out_dir) / "checkpoints"
    # A finished run (its best has zero-shot files) stays whole until this one is: the new best
    # epochs go to best.next, which is completed and then swapped in.
    finished = (root / "best" / ZERO_SHOT_SETTINGS).is_file()
    summary = pipeline.fit(train_set, resume=resume, best_name=STAGED_BEST if finished else "best")
    if not pipeline.trainer.dist.is_main:
        return summary
    if finished and not (root / STAGED_BEST).is_dir():  # no better epoch: rebuild the zero-shot files on a copy
        copy = root / f".{STAGED_BEST}.copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(resolve(root / "best"), copy)
        os.replace(copy, root / STAGED_BEST)
    best = pipeline.use_checkpoint(STAGED_BEST if finished else "best")

    def loader(subset: VideoList):
        return evaluation_loader(subset, eval_spec, config.batch_size, audio=audio, backend=data.backend,
                                 on_error=data.on_error, missing_audio=data.missing_audio)

    sample = pipeline.open_set_sample(videos)
    clf = pipeline.classifier(loader(videos), calibration=None if sample is None else loader(sample),
                              clip_spec=eval_spec)
    if clf.open_set is None and not clf.open_set_missing:
        log.warning("the checkpoint has no open-set calibration: `zsar predict` will not answer 'none of these'")
    pipeline.save(clf)
    if finished:
        best = replace_checkpoint(best, root / "best")
    log.info("zero-shot checkpoint: %s", best)
    return {**summary, "checkpoint": str(best), "selection": clf.selection}
