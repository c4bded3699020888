"""GZSL end to end for any registered model: the AVCA two-stage recipe and checkpoint evaluation.

Both talk to the model only through its contract (:class:`zsar.models.ZeroShotModel`): training,
representations and the zero-shot head through :class:`zsar.train.pipeline.Pipeline` (the run
every caller shares), videos through :func:`zsar.data.evaluation_loader`, and class embeddings
through the model's zero-shot head (:data:`zsar.zeroshot.heads.HEADS`) and a label embedder
(:func:`zsar.text.embedder_from_spec`):

* :func:`run_gzsl_recipe` (``zsar gzsl CONFIG``): a :class:`GZSLConfig` names the dataset, the AVCA
  split, the videos and the model; the six AVCA stages are cut from the videos
  (:func:`zsar.eval.avca_stages`), stage 1 trains a fresh model epoch by epoch (``Trainer.fit``
  with ``stop_after``) and evaluates it after each epoch, stage 2 retrains on its classes for the
  chosen number of epochs, and the S, U, HM and ZSL of stage 2 go into a JSON report with the S/U
  trade-off plot; stage 2's model is saved as a zero-shot checkpoint.
* :func:`evaluate_gzsl_checkpoint` (``zsar eval --protocol gzsl``): a saved zero-shot checkpoint on
  lists of test videos of seen and of unseen classes, with beta calibrated on validation lists or
  given.

Prototype-transfer heads (ResT) compose the class matrix from seen-class prototypes: the recipe
computes them from the current stage's training videos (evaluation clips) whenever it evaluates.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from .. import config as _config
from .._utils import torch_threads
from ..data import AVCAFeatureDataset, VideoClipDataset, evaluation_loader
from ..data.config import DataConfig
from ..data.decoders import fallback_decoder
from ..data.formats import AVCA_STAGES
from ..data.records import VideoList
from ..text import embedder_from_spec
from ..train.config import TrainConfig
from ..train.lock import RunLock
from ..train.pipeline import Pipeline
from ..zeroshot import HEADS, encode_loader
from .avca import (AVCA_BENCHMARKS, GZSLEvalSet, _dataset_key, avca_label_names, avca_stages, evaluate_gzsl,
                   run_avca_protocol)
from .feature_recipe import feature_modalities, feature_stages
from .gzsl import DEFAULT_BETA_GRID, DISTANCE_METRICS
from .protocols import write_results_json
from .published import published_reports

__all__ = ["GZSLConfig", "AVCA_SPLITS", "run_gzsl_recipe", "evaluate_gzsl_checkpoint",
           "REPORT_FILE", "PLOT_FILE"]

#: Short split names of the config -> the AVCA split directories.
AVCA_SPLITS = {"main": "main_split", "cls": "cls_split"}
REPORT_FILE = "gzsl_report.json"
PLOT_FILE = "gzsl_tradeoff.png"


# ---- shared plumbing -------------------------------------------------------------------------------

def _encode_videos(model, videos: VideoList, spec, *, batch_size: int = 8, backend: str = "auto",
                  on_error: str = "skip", num_workers: int | None = None, missing_audio: str = "zeros",
                  progress: bool = True, desc: str = "encoding videos") -> tuple[torch.Tensor, list[str]]:
    """Representations of ``videos`` read with ``spec`` (and the audio the model takes), in the form
    :meth:`zsar.eval.GZSLEvalSet.encode` accepts: ``(x (N, D), video_ids)`` of the videos read, in
    list order; with ``on_error="skip"`` unreadable files are left out."""
    loader = evaluation_loader(videos, spec, batch_size, audio=model.inputs.audio, backend=backend,
                               on_error=on_error, missing_audio=missing_audio, num_workers=num_workers)
    encoded = encode_loader(model, loader, progress, desc=desc)
    return encoded.x, encoded.video_ids


def _head_metric(head_cls, settings: dict[str, Any]) -> str:
    """The distance a zero-shot head ranks by: its ``metric`` setting, else its default."""
    if "metric" in settings:
        return settings["metric"]
    param = inspect.signature(head_cls).parameters.get("metric")
    return param.default if param is not None else head_cls.metric


def _with_videos(videos: VideoList) -> VideoList:
    """``videos`` restricted to the classes that have videos (a class file may list more)."""
    present = {r.label for r in videos.records}
    return videos.subset([c for i, c in enumerate(videos.classes) if i in present])


# ---- the recipe's config ---------------------------------------------------------------------------

@dataclass
class GZSLConfig(TrainConfig):
    """The AVCA GZSL recipe: a training config (:class:`zsar.train.TrainConfig`: model, model_args,
    stages, batch_size, embedder, data, out_dir, ...) plus the benchmark.

    The protocol's stage 1 runs every training stage of the model (their epochs, from ``stages``
    or the model's defaults, add up to the epochs searched); stage 2 retrains for the epochs chosen.

    Attributes:
        dataset: ``ucf``, ``activitynet`` or ``vggsound`` (the packaged AVCA class splits and
            word2vec name maps; also the table's benchmark name).
        split: ``main`` or ``cls`` (``main_split``/``cls_split`` are accepted too).
        split_dir: a directory with the six ``<stage>.txt`` class files (and optionally the AVCA
            per-video ``<stage>.csv`` lists), instead of the packaged split.
        test_data: overrides of ``data`` that read the dataset's test part (e.g. ``{subset: test}``
            or ``{annotations: test.txt}``); leave it out when ``split_dir`` has per-video lists
            (``data`` is then the whole dataset).
        val_fraction: share of each seen class's training videos held out as ``stage_1_val_seen``.
        metric: ``l2`` or ``cosine`` GZSL distance (default: the model's zero-shot head's).
        beta_grid: calibration betas (default: AVCA's 16 values evenly in [0, 3]).
        head_settings, head_selection: the zero-shot head's settings (e.g. ResT's ``k``, ``theta``,
            ``rho``) or the grid to choose them on (see :class:`zsar.train.TrainConfig`).
        eval_clips: centred clips per video when evaluating (default: the model's own views, e.g.
            MZST's 4 clips x 3 crops).
        plot: write the S/U trade-off plot beside the report.
    """

    dataset: str = "ucf"
    split: str = "main"
    split_dir: str | None = None
    test_data: dict[str, Any] | None = None
    val_fraction: float = 0.2
    metric: str | None = None
    beta_grid: list[float] | None = None
    eval_clips: int | None = None
    plot: bool = True
    out_dir: str = "runs/gzsl"

    def __post_init__(self):
        super().__post_init__()
        self.dataset = _dataset_key(self.dataset)
        if self.split not in AVCA_SPLITS and self.split not in AVCA_SPLITS.values():
            raise ValueError(f"config key 'split' must be main or cls, got {self.split!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"config key 'val_fraction' must be in (0, 1), got {self.val_fraction!r}")
        if self.metric is not None and self.metric not in DISTANCE_METRICS:
            raise ValueError(f"config key 'metric' must be one of {DISTANCE_METRICS} or null, got {self.metric!r}")
        if self.beta_grid is not None and not (
                self.beta_grid and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
                                       for b in self.beta_grid)):
            raise ValueError(f"config key 'beta_grid' must be a non-empty list of finite numbers, got {self.beta_grid!r}")
        if self.eval_clips is not None and self.eval_clips < 1:
            raise ValueError(f"config key 'eval_clips' must be >= 1, got {self.eval_clips}")
        if self.test_data is not None:
            self.test_data_config()  # unknown keys fail now, not after stage 1

    @property
    def avca_split(self) -> str:
        """``main_split`` or ``cls_split``."""
        return AVCA_SPLITS.get(self.split, self.split)

    def test_data_config(self) -> DataConfig | None:
        """``data`` with the ``test_data`` overrides (None without ``test_data``)."""
        if self.test_data is None:
            return None
        if self.data is None:
            raise ValueError("config key 'test_data' overrides 'data', which is not set")
        return _config.from_dict(DataConfig, {**asdict(self.data), **self.test_data}, prefix="test_data.")

    def train_config(self, out_dir: str | Path) -> TrainConfig:
        """The training part, writing into ``out_dir`` (one per protocol stage)."""
        values = {f.name: getattr(self, f.name) for f in fields(TrainConfig)}
        return TrainConfig(**{**values, "out_dir": str(out_dir)})


# ---- the recipe ------------------------------------------------------------------------------------

def recipe_embedder(config: GZSLConfig, classes: Sequence[str], trust_pickle: bool = False):
    """The label embedder of ``config.embedder``; word vectors with a packaged split get the packaged
    ``*_w2v_class_names.csv`` label text of ``classes`` (entries of the spec's own ``name_map`` win).
    ``trust_pickle``: let the spec name a gensim pickle (see :func:`zsar.text.embedder_from_spec`)."""
    spec = config.embedder_spec()
    if spec.get("type") == "word_vectors" and config.split_dir is None:
        spec["name_map"] = {**avca_label_names(config.dataset, classes), **(spec.get("name_map") or {})}
    return embedder_from_spec(spec, trust_pickle=trust_pickle, where="config key 'embedder'")


class _RegisteredModelRunner:
    """The ``train``/``encode``/``class_embeddings`` callables of :func:`run_avca_protocol` for a
    registered model: a fresh :class:`~zsar.train.pipeline.Pipeline` per protocol stage, writing
    into ``out_dir/stage_<n>``."""

    def __init__(self, config: GZSLConfig, embedder, out_dir: str | Path | None = None):
        self.config, self.embedder = config, embedder
        self.out_dir = Path(config.out_dir if out_dir is None else out_dir)
        self.pipeline: Pipeline | None = None
        self.videos: VideoList | None = None
        self.train_set = None
        self.eval_spec = None
        self._classifier = None
        self._built = 0

    def _prepare(self, videos: VideoList) -> Pipeline:
        """The pipeline of a fresh model for ``videos`` (kept until another stage's videos come)."""
        if self.pipeline is not None and videos is self.videos:
            return self.pipeline
        cfg, data = self.config, self.config.data
        self._built += 1
        self.pipeline = Pipeline(cfg.train_config(self.out_dir / f"stage_{self._built}"), videos.classes,
                                 self.embedder)
        train_spec, self.eval_spec = self.pipeline.clip_specs(cfg.eval_clips, stride=data.stride,
                                                              short_side=data.short_side)
        self.train_set = self._train_dataset(videos, train_spec)
        self.videos, self._classifier = videos, None
        return self.pipeline

    def _train_dataset(self, videos: VideoList, spec):
        """The training dataset of ``videos`` for the current model (decoded clips; feature runs read features)."""
        data = self.config.data
        return VideoClipDataset(videos, spec, backend=fallback_decoder(data.backend), seed=self.config.seed,
                                on_error=data.on_error, audio=self.pipeline.model.inputs.audio,
                                missing_audio=data.missing_audio)

    def epochs(self, videos: VideoList) -> int:
        """Epochs of one full training run on ``videos``: all the model's stages."""
        pipeline = self._prepare(videos)
        stages = pipeline.config.stage_plan(pipeline.model.training_stages())
        total = sum(stage_cfg.epochs for _, stage_cfg in stages)
        if total < 1:
            raise ValueError(f"the stages of {self.config.model!r} add up to {total} epochs; set stages.<name>.epochs")
        return total

    @property
    def head_metric(self) -> str:
        return _head_metric(HEADS[self.pipeline.model.zero_shot_head], self.config.head_settings)

    def train(self, videos: VideoList, epochs: int, after_epoch) -> None:
        pipeline = self._prepare(videos)
        if after_epoch is None:
            pipeline.fit(self.train_set, resume=False, stop_after=epochs)
            self._classifier = None
            return
        for epoch in range(1, epochs + 1):
            pipeline.fit(self.train_set, resume=epoch > 1, stop_after=epoch)
            self._classifier = None
            scores = after_epoch()
            if self.config.progress:
                print(f"stage {self._built} epoch {epoch}: HM {100 * scores['HM']:.2f} (S {100 * scores['S']:.2f}, "
                      f"U {100 * scores['U']:.2f}) at beta {scores['beta']:.2f}, ZSL {100 * scores['ZSL']:.2f}",
                      flush=True)

    def _loader(self, videos: VideoList):
        """An evaluation loader of ``videos`` (in order) for the current model (feature runs read features)."""
        data = self.config.data
        return evaluation_loader(videos, self.eval_spec, self.config.batch_size,
                                 audio=self.pipeline.model.inputs.audio, backend=data.backend, on_error=data.on_error,
                                 missing_audio=data.missing_audio, num_workers=self.config.num_workers)

    def encode(self, videos: VideoList) -> tuple[torch.Tensor, list[str]]:
        encoded = self.pipeline.encode(self._loader(videos))
        return encoded.x, encoded.video_ids

    def classifier(self):
        """The zero-shot classifier of the model as trained so far (its head built from this
        stage's training videos when the head needs seen-class representations)."""
        if self._classifier is None:
            self._classifier = self.pipeline.classifier(self._loader(self.videos), clip_spec=self.eval_spec)
        return self._classifier

    def final_classifier(self):
        """:meth:`classifier` with its open-set calibration, for the saved checkpoint: a head built
        without the training videos (MZST's) is calibrated on a few of them per class here, once,
        rather than at every epoch's evaluation."""
        sample = self.pipeline.open_set_sample(self.videos)
        if sample is None:
            return self.classifier()
        return self.pipeline.classifier(None, calibration=self._loader(sample), clip_spec=self.eval_spec)

    def class_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        return self.classifier().set_labels(list(names)).class_matrix


class FeatureRunner(_RegisteredModelRunner):
    """The runner of a ``zsar gzsl`` run on released features (:mod:`zsar.eval.feature_recipe`): datasets and
    loaders of :class:`~zsar.data.AVCAFeatureDataset`, one per list for the run (the protocol evaluates the
    same lists every epoch; a kept dataset keeps its files open and cached).

    Trains and encodes with one intra-op thread: a feature batch is a few tokens per video, so each op is
    tiny and thread hand-offs cost more than they save (``bench/bench_avca_features.py``: an
    ``mzst_features`` training step at batch 64 took 1.08 s with 1 thread and 11.7 s with 2 on the 2-core
    development machine at load 14-16, ratio 10.5x, min-max 7.2-12.6x over 4 interleaved rounds).
    """

    threads = 1

    def __init__(self, config: GZSLConfig, embedder, out_dir: str | Path | None = None):
        super().__init__(config, embedder, out_dir)
        self._datasets: dict[tuple, tuple] = {}  # (id of a list, modalities) -> (the list, its dataset)

    def _dataset(self, videos: VideoList):
        key = (id(videos), feature_modalities(self.pipeline.model))
        if key not in self._datasets:  # the list is kept with it, so its id is not reused meanwhile
            self._datasets[key] = (videos, AVCAFeatureDataset(videos, key[1]))
        return self._datasets[key][1]

    def _train_dataset(self, videos: VideoList, spec):
        return self._dataset(videos)

    def _loader(self, videos: VideoList):
        dataset = self._dataset(videos)
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False,
                          num_workers=self.config.num_workers, collate_fn=dataset.collate_fn)

    def train(self, videos: VideoList, epochs: int, after_epoch) -> None:
        with torch_threads(self.threads):
            super().train(videos, epochs, after_epoch)

    def encode(self, videos: VideoList):
        with torch_threads(self.threads):
            return super().encode(videos)

    def classifier(self):
        with torch_threads(self.threads):
            return super().classifier()

    def final_classifier(self):
        with torch_threads(self.threads):
            return super().final_classifier()


def run_gzsl_recipe(config: GZSLConfig, trust_pickle: bool = False) -> dict[str, Any]:
    """Runs the AVCA two-stage protocol for ``config.model`` on ``config``'s videos; ``trust_pickle``
    lets ``config.embedder`` name a gensim pickle (``zsar gzsl --trust-pickle``).

    Writes into ``config.out_dir``: ``stage_1/`` and ``stage_2/`` (each a training run, as
    ``zsar train`` writes it), ``gzsl_report.json``, ``gzsl_tradeoff.png`` (``plot``), and the
    zero-shot classifier of stage 2's model beside its checkpoint ``stage_2/checkpoints/last``
    (for ``zsar eval --protocol gzsl``/``zsar predict``).

    Returns:
        The report of :func:`zsar.eval.run_avca_protocol` plus ``checkpoint``, ``embedder``
        (its spec), ``report``, ``plot``, ``config`` and ``published`` (the papers' rows for this benchmark,
        :func:`zsar.eval.published.published_reports`).

    With ``data.format: avca_features`` the videos are the released AVCA-GZSL features
    (:mod:`zsar.eval.feature_recipe`): the six stages come from the dataset folder's own split files and
    feature files, and the labels are embedded with its released word2vec table.

    Raises:
        ValueError: no ``data``, bad stages (see :func:`zsar.eval.avca_stages`), an embedder or model
            that cannot be built, or as the trainer raises.
    """
    if config.data is None:
        raise ValueError("the config has no `data` section (format, annotations, root): nothing to train on")
    if config.data.format == "avca_features":  # the released features: their own stages, word2vec and reader
        stages, embedder = feature_stages(config)
        make_runner = FeatureRunner
    else:
        videos = config.data.read()
        test_config = config.test_data_config()
        stages = avca_stages(videos, config.dataset, config.avca_split, split_dir=config.split_dir,
                             test_videos=None if test_config is None else test_config.read(),
                             val_fraction=config.val_fraction, seed=config.seed)
        embedder = recipe_embedder(config, list(dict.fromkeys(c for s in AVCA_STAGES for c in stages[s].classes)),
                                   trust_pickle)
        make_runner = _RegisteredModelRunner
    out = Path(config.out_dir)
    with RunLock(out):
        finished = (out / REPORT_FILE).is_file()
        work = out / _STAGING if finished else out
        if finished:
            shutil.rmtree(work, ignore_errors=True)  # a killed re-run's work (zsar's own folder)
        runner = make_runner(config, embedder, work)
        epochs = runner.epochs(stages["stage_1_train"])
        metric = config.metric or runner.head_metric
        report = run_avca_protocol(stages, runner.train, runner.encode, runner.class_embeddings, epochs=epochs,
                                   metric=metric, grid=config.beta_grid,
                                   dataset=config.dataset, split=config.avca_split, model=config.model)
        _add_uncalibrated(report)
        saved = runner.pipeline.save(runner.final_classifier())
        checkpoint = out / Path(saved).relative_to(work)
        spec = getattr(embedder, "spec", lambda: None)()
        report.update(checkpoint=str(checkpoint), embedder=spec, report=str(out / REPORT_FILE), plot=None,
                      config=config.to_dict(), published=published_reports(config.dataset, config.avca_split))
        if config.plot:
            from .plots import plot_gzsl_tradeoff  # lazy: plots load matplotlib, an optional dependency

            title = f"{config.model} on {AVCA_BENCHMARKS[config.dataset]} ({config.avca_split}): S/U trade-off of stage 2"
            plot_gzsl_tradeoff(report["stage_2"]["curve"], work / PLOT_FILE, chosen_beta=report["stage_2"]["beta"],
                               title=title)
            report["plot"] = str(out / PLOT_FILE)
        write_results_json(work / REPORT_FILE, report)
        if finished:
            _move_into_place(work, out, ["stage_1", "stage_2", PLOT_FILE, REPORT_FILE])
    return report


def _add_uncalibrated(report: dict[str, Any]) -> None:
    """``report["uncalibrated"]``: stage 2's test S/U/HM at beta = 0, beside AVCA's calibrated ones. The
    MZST paper presents its model this way (no calibrated stacking; its Tables 5 and 6)."""
    curve = report["stage_2"]["curve"]
    betas = [float(b) for b in curve["beta"]]
    if 0.0 in betas:
        i = betas.index(0.0)
        report["uncalibrated"] = {"beta": 0.0, **{k: float(curve[k][i]) for k in ("S", "U", "HM")}}


#: Where a re-run into a finished GZSL run's folder works until it is complete.
_STAGING = ".gzsl-next"


def _move_into_place(work: Path, out: Path, names: list[str]) -> None:
    """Moves ``names`` from ``work`` to ``out``, replacing the old ones; the last name is the report,
    whose presence marks a finished run. The old report goes aside first and the new one comes in
    last, so a kill in between leaves a run marked unfinished (the next run redoes it), never old and
    new entries under a report; the old entries are kept aside until all new ones are in."""
    old = out / ".gzsl-old"
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir()
    *entries, report = names
    if (out / report).exists():
        os.replace(out / report, old / report)
    for name in (*entries, report):
        if (out / name).exists():
            os.replace(out / name, old / name)
        if (work / name).exists():
            os.replace(work / name, out / name)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


# ---- a saved checkpoint ----------------------------------------------------------------------------

def evaluate_gzsl_checkpoint(clf, test_seen: VideoList, test_unseen: VideoList, *,
                             val_seen: VideoList | None = None, val_unseen: VideoList | None = None,
                             beta: float | None = None, metric: str | None = None, grid=None,
                             batch_size: int = 8, backend: str = "auto", on_error: str = "skip",
                             num_workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """GZSL of a zero-shot checkpoint on test videos of seen and of unseen classes.

    The search space is the classes with videos in ``test_seen`` (which must be classes the model
    was trained on) and in ``test_unseen`` (which must not be); the class matrix comes from the
    classifier's head and embedder. Beta is ``beta``, or the one of ``grid`` with the highest HM on
    ``val_seen`` ∪ ``val_unseen`` (search space: their classes).

    Args:
        clf: a :class:`zsar.zeroshot.ZeroShotClassifier` (e.g. ``ZeroShotClassifier.load(ckpt)``);
            its ``clip_spec`` reads the videos.
        test_seen, test_unseen: the test lists.
        val_seen, val_unseen: validation lists (both, or neither with a fixed ``beta``).
        beta: the calibration to apply instead of validating.
        metric: ``l2`` or ``cosine`` (default: the head's).
        grid: calibration betas (default: 16 values evenly in [0, 3]).
        batch_size, backend, on_error, num_workers, progress: how videos are read.

    Returns:
        ``{"protocol": "gzsl", "model", "metric", "beta_grid"}`` plus :func:`zsar.eval.evaluate_gzsl`'s
        report (``test``, ``beta``, ``calibration``, ``validation``, counts, ``curve``,
        ``per_class_accuracy``).

    Raises:
        ValueError: only one validation list, both or neither of ``beta`` and validation lists,
            seen test classes the checkpoint was not trained on, or unseen ones it was.
    """
    if (val_seen is None) != (val_unseen is None):
        raise ValueError("calibration needs both validation lists (seen and unseen classes)")
    test_seen, test_unseen = _with_videos(test_seen), _with_videos(test_unseen)
    trained = set(clf.seen_labels or ())
    if clf.seen_labels is not None:
        untrained = [c for c in test_seen.classes if c not in trained]
        if untrained:
            raise ValueError(f"seen test classes the checkpoint was not trained on: {untrained[:5]} "
                             f"(its classes: {clf.seen_labels[:5]}...)")
        leaked = [c for c in test_unseen.classes if c in trained]
        if leaked:
            raise ValueError(f"unseen test classes the checkpoint was trained on: {leaked[:5]}")
    test = GZSLEvalSet(test_seen.classes, test_seen, test_unseen)
    val = None
    if val_seen is not None:
        val_seen, val_unseen = _with_videos(val_seen), _with_videos(val_unseen)
        val = GZSLEvalSet(val_seen.classes, val_seen, val_unseen)
    metric = metric or clf.head.metric
    grid = DEFAULT_BETA_GRID if grid is None else grid

    def encode(videos: VideoList):
        return _encode_videos(clf.model, videos, clf.clip_spec, batch_size=batch_size, backend=backend,
                             on_error=on_error, num_workers=num_workers, progress=progress)

    result = evaluate_gzsl(encode, lambda names: clf.set_labels(list(names)).class_matrix, test, beta=beta,
                           val=val, metric=metric, grid=grid)
    return {"protocol": "gzsl", "model": clf.model.registry_name or None, "metric": metric,
            "beta_grid": result["curve"]["beta"], **result}
