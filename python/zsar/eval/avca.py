"""The AVCA two-stage GZSL protocol (UCF-GZSL, ActivityNet-GZSL, VGGSound-GZSL), for any model.

The benchmarks of Mercea et al. (AVCA), used by the MZST paper, split each dataset's classes twice
(``main_split``, or ``cls_split`` without the classes of the feature extractors' pretraining):

* **Stage 1** trains on ``stage_1_train`` and evaluates after every epoch on ``stage_1_val_seen`` ∪
  ``stage_1_val_unseen`` (GZSL search space: their classes). The epoch with the highest calibrated
  HM is chosen (the earliest on ties), with its calibrated beta.
* **Stage 2** retrains from scratch on ``stage_2_train`` (stage 1's seen and unseen classes) for
  that many epochs and reports S, U, HM and ZSL on ``stage_2_test_seen`` ∪ ``stage_2_test_unseen``
  with stage 1's beta (:mod:`zsar.eval.gzsl`).

The driver, :func:`run_avca_protocol`, knows nothing of models. It takes three callables::

    train(videos, epochs, after_epoch)  # a fresh model trained on `videos` for `epochs` epochs,
                                        # calling after_epoch() (when not None) after each one
    encode(videos) -> (N, E)            # the current model's zero-shot vectors, in record order,
                                        # or (x, video_ids) of the videos it could read
    class_embeddings(names) -> (C, E)   # or an embedder with .embed(names); asked at every
                                        # evaluation, so it may depend on the trained model

``videos`` are :class:`~zsar.data.records.VideoList` objects whose labels index their ``classes``
(the seen classes, for ``train``). :func:`avca_stages` cuts a dataset's videos into the six stages.
:func:`evaluate_gzsl` is the evaluation of one trained model on a :class:`GZSLEvalSet` (stage 2's,
or any seen/unseen test lists), with beta fixed or calibrated on validation videos;
:mod:`zsar.eval.recipes` runs all of it for a registered model from video folders.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .._utils import as_numpy
from ..data.formats import AVCA_STAGES, match_class_names, read_avca_split
from ..data.records import VideoList, VideoRecord
from ..resources import AVCA_DATASETS, avca_name_map_file
from ..text import load_name_map
from .gzsl import DEFAULT_BETA_GRID, class_distances, gzsl_curve, gzsl_per_class_accuracy, gzsl_scores

__all__ = [
    "AVCA_BENCHMARKS",
    "avca_stages",
    "avca_label_names",
    "GZSLEvalSet",
    "evaluate_gzsl",
    "run_avca_protocol",
    "format_gzsl_table",
]

log = logging.getLogger(__name__)

#: Dataset key (as in :data:`zsar.resources.AVCA_DATASETS`) -> benchmark name in the papers' tables.
AVCA_BENCHMARKS = {"ucf": "UCF-GZSL", "activitynet": "ActivityNet-GZSL", "vggsound": "VGGSound-GZSL"}
_TRAIN_STAGES = ("stage_1_train", "stage_2_train")


def _dataset_key(dataset: str) -> str:
    key = str(dataset).lower()
    if key not in AVCA_DATASETS:
        raise ValueError(f"unknown AVCA dataset {dataset!r}; expected one of {', '.join(AVCA_DATASETS)}")
    return key


def _packaged_split_dir(dataset: str, split: str) -> Path:
    if split not in ("main_split", "cls_split"):
        raise ValueError(f"unknown AVCA split {split!r}; expected main_split or cls_split")
    node = resources.files("zsar.resources").joinpath("avgzsl_splits", AVCA_DATASETS[dataset][0], split)
    path = Path(str(node))
    if not path.is_dir():  # e.g. zsar imported from a zip: pass split_dir instead
        raise FileNotFoundError(f"packaged AVCA split {path} is not a directory; pass split_dir")
    return path


def _hold_out(videos: VideoList, fraction: float, seed: int) -> tuple[VideoList, VideoList]:
    """Per class, ``round(fraction * n)`` videos drawn with ``seed`` (at least 1, and at most n − 1,
    so that every class of two or more videos is both trained and validated)."""
    by_class: dict[int, list[VideoRecord]] = defaultdict(list)
    for r in videos.records:
        by_class[r.label].append(r)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted(by_class):
        recs = sorted(by_class[label], key=lambda r: r.video_id)
        k = min(len(recs) - 1, max(1, int(round(fraction * len(recs)))))
        held.update(recs[i].video_id for i in rng.permutation(len(recs))[:k])
    keep = [r for r in videos.records if r.video_id not in held]
    out = [r for r in videos.records if r.video_id in held]
    return VideoList(keep, list(videos.classes)), VideoList(out, list(videos.classes))


def avca_stages(
    videos: VideoList,
    dataset: str,
    split: str = "main_split",
    *,
    test_videos: VideoList | None = None,
    split_dir=None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, VideoList]:
    """The six AVCA stages of a dataset's videos.

    The packaged splits (``zsar.resources``) list classes only, and the seen stages share their
    classes (``stage_1_train`` and ``stage_1_val_seen``; ``stage_2_train`` and
    ``stage_2_test_seen``), so videos are assigned as follows:

    * ``split_dir`` holding the per-video ``<stage>.csv`` lists of the AVCA release for all six
      stages: every stage is the listed part of ``videos`` (the whole dataset);
      ``test_videos`` must not be given.
    * otherwise ``videos`` is the dataset's training part and ``test_videos`` its test part:
      stage 1 comes from ``videos`` only (``stage_1_val_seen`` is a per-class ``val_fraction`` of
      the seen classes' videos, at least one of each class with two or more, drawn with ``seed``
      and left out of ``stage_1_train``;
      ``stage_1_val_unseen`` all videos of those classes), ``stage_2_train`` is ``videos``, and
      the two test stages come from ``test_videos``. Model selection never sees a test video.

    Class names are matched to the dataset's spelling by :func:`zsar.data.read_avca_split`.

    Args:
        videos: a :class:`VideoList` of the dataset (its training part without per-video lists).
        dataset: ``ucf``, ``activitynet`` or ``vggsound``.
        split: ``main_split`` or ``cls_split`` (for the packaged split directory).
        test_videos: the dataset's test part (required without per-video lists).
        split_dir: a directory with the six ``<stage>.txt`` files (and optionally ``.csv`` lists);
            default: the packaged ``avgzsl_splits/<dataset>/<split>``.
        val_fraction: share of each seen class held out as ``stage_1_val_seen`` (fallback only).
        seed: seed of that draw.

    Returns:
        ``{stage: VideoList}`` for the six stages of :data:`zsar.data.AVCA_STAGES`, labels indexing
        each stage's own classes (in stage-file order).

    Raises:
        ValueError: unknown dataset/split, class names that match no dataset class, a missing
            ``test_videos``, a stage without videos, or a training video that is also evaluated.
    """
    key = _dataset_key(dataset)
    directory = _packaged_split_dir(key, split) if split_dir is None else Path(split_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"split_dir {directory} is not a folder (expected the AVCA <stage>.txt class "
                                f"lists, and optionally the per-video <stage>.csv lists)")
    per_video = all((directory / f"{s}.csv").is_file() for s in AVCA_STAGES)
    if per_video:
        if test_videos is not None:
            raise ValueError(f"{directory} has per-video stage lists: pass the whole dataset as videos, "
                             f"without test_videos")
        stages = {s: read_avca_split(videos, directory, s, video_lists=True) for s in AVCA_STAGES}
    else:
        if test_videos is None:
            raise ValueError(f"{directory} lists classes only (no per-video <stage>.csv lists), so "
                             f"seen-class videos cannot be split by it: pass test_videos (the dataset's "
                             f"test part; in a `zsar gzsl` config: test_data) or a split_dir with the AVCA "
                             f"per-video lists")
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")

        def part(source: VideoList, stage: str) -> VideoList:
            return read_avca_split(source, directory, stage, video_lists=False)

        seen_1 = part(videos, "stage_1_train")
        train_1, val_seen_1 = _hold_out(seen_1, float(val_fraction), seed)
        stages = {
            "stage_1_train": train_1,
            # The val-seen file lists the training classes (maybe in another order): relabel.
            "stage_1_val_seen": part(val_seen_1, "stage_1_val_seen"),
            "stage_1_val_unseen": part(videos, "stage_1_val_unseen"),
            "stage_2_train": part(videos, "stage_2_train"),
            "stage_2_test_seen": part(test_videos, "stage_2_test_seen"),
            "stage_2_test_unseen": part(test_videos, "stage_2_test_unseen"),
        }
    _check_stages(stages, str(directory))
    return stages


def _check_stages(stages: Mapping[str, VideoList], where: str) -> None:
    missing = [s for s in AVCA_STAGES if s not in stages]
    if missing:
        raise ValueError(f"stages: missing {missing} (need all of {list(AVCA_STAGES)})")
    empty = [s for s in AVCA_STAGES if len(stages[s]) == 0]
    if empty:
        raise ValueError(f"{where}: no videos for {empty}")
    for n in (1, 2):
        train = stages[f"stage_{n}_train"]
        seen = stages["stage_1_val_seen" if n == 1 else "stage_2_test_seen"]
        unseen = stages["stage_1_val_unseen" if n == 1 else "stage_2_test_unseen"]
        extra = sorted(set(seen.classes) - set(train.classes))
        if extra:
            raise ValueError(f"{where}: stage {n} evaluates seen classes it does not train on: {extra[:5]}")
        both = sorted(set(unseen.classes) & set(train.classes))
        if both:
            raise ValueError(f"{where}: stage {n} trains on its unseen classes {both[:5]}")
        trained = {r.path for r in train.records}
        leaked = [r.path for r in seen.records + unseen.records if r.path in trained]
        if leaked:
            raise ValueError(f"{where}: stage {n} evaluates {len(leaked)} of its training videos, e.g. {leaked[0]}")


def avca_label_names(dataset: str, classes: Sequence[str]) -> dict[str, str]:
    """The packaged word2vec label text (``*_w2v_class_names.csv``) of each of ``classes``.

    Args:
        dataset: ``ucf``, ``activitynet`` or ``vggsound``.
        classes: class names in the dataset's spelling (e.g. ActivityNet's ``Applying sunscreen``
            for the map's ``Applyingsunscreen``), matched by :func:`zsar.data.match_class_names`.

    Returns:
        ``{class name: words to embed}``, for :class:`zsar.text.WordVectorEmbedder` ``(name_map=...)``.
    """
    with avca_name_map_file(_dataset_key(dataset)) as path:
        name_map = load_name_map(path)
    originals = list(name_map)
    matched = match_class_names(list(classes), originals, source=f"{dataset} w2v class names")
    return {c: name_map[o] for c, o in zip(classes, matched)}


class GZSLEvalSet:
    """The videos of one GZSL evaluation (a seen and an unseen part), labelled over its search space.

    The search space is ``seen_classes`` (all classes the model was trained on, e.g. a training
    stage's classes) followed by the unseen part's classes; column ``i`` of the distances is
    :attr:`classes` ``[i]``.

    Args:
        seen_classes: the seen classes, in order (those of ``seen`` must be among them).
        seen: videos of seen classes; labels index ``seen.classes``.
        unseen: videos of unseen classes; labels index ``unseen.classes``.

    Raises:
        ValueError: an unseen class that is also seen, seen videos of a class outside
            ``seen_classes``, or a video id in both parts.
    """

    def __init__(self, seen_classes: Sequence[str], seen: VideoList, unseen: VideoList):
        self.classes = list(seen_classes) + list(unseen.classes)
        both = sorted(set(seen_classes) & set(unseen.classes))
        if both:
            raise ValueError(f"classes {both[:5]} are both seen and unseen")
        outside = sorted({seen.classes[r.label] for r in seen.records} - set(seen_classes))
        if outside:
            raise ValueError(f"seen videos of classes the model was not trained on: {outside[:5]}")
        index = {c: i for i, c in enumerate(self.classes)}
        records = [VideoRecord(r.path, index[part.classes[r.label]], r.video_id)
                   for part in (seen, unseen) for r in part.records]
        self.videos = VideoList(records, self.classes)
        self.labels = np.array([r.label for r in records], dtype=np.int64)
        self.row = {r.video_id: i for i, r in enumerate(records)}
        if len(self.row) != len(records):
            twice = next(r.video_id for i, r in enumerate(records) if self.row[r.video_id] != i)
            raise ValueError(f"video {twice!r} is listed twice (in both the seen and the unseen part?)")
        self.seen = np.arange(len(seen_classes))
        self.unseen = np.arange(len(seen_classes), len(self.classes))
        self.counts = {"seen": len(seen), "unseen": len(unseen)}
        self.skipped = 0

    def encode(self, encode) -> tuple[np.ndarray, np.ndarray]:
        """``(x, labels)`` of the videos ``encode`` read.

        ``encode(videos)`` returns ``(N, E)`` rows, one per record in order, or ``(x, video_ids)``
        for the videos it could read (unreadable files left out; counted in :attr:`skipped`).
        """
        out = encode(self.videos)
        if isinstance(out, tuple):
            x, ids = as_numpy(out[0]), list(out[1])
            unknown = [i for i in ids if i not in self.row]
            if unknown:
                raise ValueError(f"encode returned video ids that are not in the set, e.g. {unknown[0]!r}")
            labels = self.labels[[self.row[i] for i in ids]]
        else:
            x, labels = as_numpy(out), self.labels
        if x.ndim != 2 or x.shape[0] != len(labels):
            raise ValueError(f"encode returned shape {tuple(x.shape)} for {len(labels)} videos; "
                             f"expected ({len(labels)}, E)")
        self.skipped = len(self.labels) - len(labels)
        return x, labels

    def distances(self, encode, class_embeddings, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """``(dist (N, C), labels (N,))`` of the videos read against :attr:`classes`."""
        x, labels = self.encode(encode)
        embed = getattr(class_embeddings, "embed", class_embeddings)
        return class_distances(x, embed(list(self.classes)), metric), labels

    def per_class(self, dist: np.ndarray, labels: np.ndarray, beta: float) -> dict:
        """Per-class recall by class name: GZSL (with ``beta``) for all classes, ZSL for unseen ones."""
        recall = gzsl_per_class_accuracy(dist, labels, self.seen, self.unseen, beta)

        def named(values, idx):
            return {self.classes[i]: (None if math.isnan(values[i]) else float(values[i])) for i in idx}

        return {"gzsl": named(recall["gzsl"], range(len(self.classes))), "zsl": named(recall["zsl"], self.unseen)}

    def summary(self) -> dict:
        """Class and video counts for a report."""
        return {"classes": {"seen": len(self.seen), "unseen": len(self.unseen)},
                "videos": dict(self.counts), "skipped_videos": self.skipped}


def evaluate_gzsl(encode, class_embeddings, test: GZSLEvalSet, *, beta: float | None = None,
                  val: GZSLEvalSet | None = None, metric: str = "l2", grid=None) -> dict:
    """GZSL and ZSL of the current model on ``test``, with beta fixed or calibrated on ``val``.

    Args:
        encode: ``encode(videos)`` as in :meth:`GZSLEvalSet.encode`.
        class_embeddings: ``embed(names) -> (C, E)``, a callable or an object with ``.embed``.
        test: the test videos.
        beta: the calibration to apply (exclusive with ``val``).
        val: validation videos; beta is then the one of ``grid`` with the highest HM on them.
        metric: ``l2`` or ``cosine`` (:func:`zsar.eval.gzsl.class_distances`).
        grid: calibration betas (default: 16 values evenly in [0, 3]); also the test curve's (with
            a fixed ``beta`` added when it is not on the grid).

    Returns:
        ``{"test": {S, U, HM, ZSL}, "beta", "calibration": "fixed" | "validation", "validation"
        (None, or its S/U/HM/ZSL at the chosen beta, its curve and counts), "classes", "videos",
        "skipped_videos", "curve" (the test S/U/HM over the grid), "per_class_accuracy"}``.

    Raises:
        ValueError: both or neither of ``beta`` and ``val``, or as :func:`gzsl_scores`.
    """
    if (beta is None) == (val is None):
        raise ValueError("give either a fixed beta or validation videos to calibrate it on, not both or neither")
    validation = None
    if val is not None:
        vdist, vlabels = val.distances(encode, class_embeddings, metric)
        vcurve = gzsl_curve(vdist, vlabels, val.seen, val.unseen, grid)
        b = vcurve["best"]
        beta = vcurve["beta"][b]
        validation = {**{k: vcurve[k][b] for k in ("S", "U", "HM")}, "ZSL": vcurve["ZSL"],
                      "curve": {k: vcurve[k] for k in ("beta", "S", "U", "HM")}, **val.summary()}
    dist, labels = test.distances(encode, class_embeddings, metric)
    scores = gzsl_scores(dist, labels, test.seen, test.unseen, beta)
    grid = np.asarray(DEFAULT_BETA_GRID if grid is None else as_numpy(grid), dtype=np.float64)
    if not np.isclose(grid, beta, rtol=0, atol=1e-12).any():  # a fixed beta off the grid: on the curve too
        grid = np.sort(np.append(grid, beta))
    curve = gzsl_curve(dist, labels, test.seen, test.unseen, grid)
    return {
        "test": scores,
        "beta": float(beta),
        "calibration": "fixed" if validation is None else "validation",
        "validation": validation,
        **test.summary(),
        "curve": {k: curve[k] for k in ("beta", "S", "U", "HM")},
        "per_class_accuracy": test.per_class(dist, labels, beta),
    }


def run_avca_protocol(
    stages: Mapping[str, VideoList],
    train: Callable[[VideoList, int, Callable[[], dict] | None], object],
    encode: Callable[[VideoList], object],
    class_embeddings,
    *,
    epochs: int,
    metric: str = "l2",
    grid=None,
    dataset: str | None = None,
    split: str | None = None,
    model: str | None = None,
) -> dict:
    """Run both stages of the AVCA protocol and report stage 2's S, U, HM and ZSL.

    Args:
        stages: the six stages (:func:`avca_stages`), labels indexing each stage's classes.
        train: ``train(videos, epochs, after_epoch)`` trains a fresh model on ``videos`` for
            ``epochs`` epochs and calls ``after_epoch()`` (if not None) after each epoch; the call
            returns that epoch's validation scores (a dict with ``HM``, e.g. for a scheduler).
        encode: ``encode(videos)``: ``(N, E)`` vectors of the current model, one row per record,
            or ``(x, video_ids)`` of the videos it read (:meth:`GZSLEvalSet.encode`).
        class_embeddings: ``embed(names) -> (C, E)`` as a callable or an object with ``.embed``
            (e.g. a :class:`zsar.text.WordVectorEmbedder` with :func:`avca_label_names`).
        epochs: stage-1 epochs (the most stage 2 may get).
        metric: ``l2`` (AVCA) or ``cosine`` (:func:`zsar.eval.gzsl.class_distances`).
        grid: calibration betas (default: 16 values evenly in [0, 3]).
        dataset, split, model: recorded in the report (``dataset``: ``ucf``, ``activitynet``,
            ``vggsound``).

    Returns:
        A JSON-able report: ``test`` (``S``, ``U``, ``HM``, ``ZSL`` fractions of stage 2),
        ``stage_1`` (per-epoch validation history, ``best_epoch``, ``beta``, class and video
        counts) and ``stage_2`` (``epochs``, ``beta``, the test S/U/HM curve over the grid,
        per-class accuracies), plus ``dataset``, ``split``, ``model``, ``metric``, ``beta_grid``.

    Raises:
        ValueError: bad stages, ``epochs`` < 1, or a ``train`` that did not call ``after_epoch``
            once per epoch.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    grid = DEFAULT_BETA_GRID if grid is None else grid
    _check_stages(stages, "stages")
    val = GZSLEvalSet(stages["stage_1_train"].classes, stages["stage_1_val_seen"], stages["stage_1_val_unseen"])
    test = GZSLEvalSet(stages["stage_2_train"].classes, stages["stage_2_test_seen"], stages["stage_2_test_unseen"])
    history: list[dict] = []

    def after_epoch() -> dict:
        dist, labels = val.distances(encode, class_embeddings, metric)
        curve = gzsl_curve(dist, labels, val.seen, val.unseen, grid)
        b = curve["best"]
        entry = {"epoch": len(history) + 1, "beta": curve["beta"][b], "S": curve["S"][b],
                 "U": curve["U"][b], "HM": curve["HM"][b], "ZSL": curve["ZSL"]}
        history.append(entry)
        log.info("stage 1 epoch %d: HM %.2f (S %.2f, U %.2f) at beta %.2f, ZSL %.2f", entry["epoch"],
                 100 * entry["HM"], 100 * entry["S"], 100 * entry["U"], entry["beta"], 100 * entry["ZSL"])
        return dict(entry)

    train(stages["stage_1_train"], epochs, after_epoch)
    if len(history) != epochs:
        raise ValueError(f"train called after_epoch {len(history)} times for {epochs} epochs; "
                         f"stage 1 needs one evaluation per epoch")
    top = max(h["HM"] for h in history)
    chosen = next(h for h in history if h["HM"] == top)
    best_epoch, beta = chosen["epoch"], chosen["beta"]

    train(stages["stage_2_train"], best_epoch, None)
    result = evaluate_gzsl(encode, class_embeddings, test, beta=beta, metric=metric, grid=grid)
    scores = result["test"]
    log.info("stage 2 (%d epochs, beta %.2f): S %.2f, U %.2f, HM %.2f, ZSL %.2f", best_epoch, beta,
             *(100 * scores[k] for k in ("S", "U", "HM", "ZSL")))

    return {
        "protocol": "avca-gzsl",
        "dataset": dataset,
        "split": split,
        "model": model,
        "metric": metric,
        "beta_grid": result["curve"]["beta"],
        "test": scores,
        "stage_1": {
            "epochs": epochs,
            "best_epoch": best_epoch,
            "beta": beta,
            "classes": {"seen": len(val.seen), "unseen": len(val.unseen)},
            "videos": {"train": len(stages["stage_1_train"]), "val_seen": val.counts["seen"],
                       "val_unseen": val.counts["unseen"]},
            "skipped_videos": val.skipped,
            "history": history,
        },
        "stage_2": {
            "epochs": best_epoch,
            "beta": beta,
            "classes": result["classes"],
            "videos": {"train": len(stages["stage_2_train"]), "test_seen": test.counts["seen"],
                       "test_unseen": test.counts["unseen"]},
            "skipped_videos": result["skipped_videos"],
            "curve": result["curve"],
            "per_class_accuracy": result["per_class_accuracy"],
        },
    }


def _column(report: Mapping) -> str:
    name = AVCA_BENCHMARKS.get(str(report.get("dataset") or "").lower(), report.get("dataset") or "-")
    return f"{name} (cls)" if report.get("split") == "cls_split" else str(name)


def format_gzsl_table(reports) -> str:
    """The papers' GZSL table: a row per model, per benchmark the columns S, U, HM and ZSL in percent.

    Args:
        reports: one report of :func:`run_avca_protocol` or a list of them (any dicts with
            ``model``, ``dataset``, ``split`` and ``test``). Benchmarks appear in first-seen order;
            ``cls_split`` runs are their own benchmark, e.g. ``UCF-GZSL (cls)``.

    Returns:
        The table as text (two header lines, percents with two decimals, ``-`` where a model has no
        run on a benchmark or a score is None, e.g. published rows without S and U).
    """
    rows = [reports] if isinstance(reports, Mapping) else list(reports)
    columns = list(dict.fromkeys(_column(r) for r in rows))
    models = list(dict.fromkeys(str(r.get("model") or "-") for r in rows))
    cells = {(str(r.get("model") or "-"), _column(r)): r["test"] for r in rows}
    keys = ("S", "U", "HM", "ZSL")
    body = []
    for m in models:
        line = [m]
        for c in columns:
            scores = cells.get((m, c))
            line += [f"{100 * scores[k]:.2f}" if scores and scores.get(k) is not None and not math.isnan(scores[k])
                     else "-" for k in keys]
        body.append(line)
    width0 = max(len("model"), *(len(m) for m in models))
    widths = [max(6, *(len(line[i]) for line in body)) for i in range(1, len(body[0]))]
    groups, sub = ["".ljust(width0)], ["model".ljust(width0)]
    for j, c in enumerate(columns):
        w = widths[4 * j: 4 * j + 4]
        widths[4 * j + 3] += max(0, len(c) - (sum(w) + 2 * 3))  # a long benchmark name widens ZSL
        w = widths[4 * j: 4 * j + 4]
        groups.append(c.center(sum(w) + 2 * 3))
        sub.append("  ".join(k.rjust(x) for k, x in zip(keys, w)))
    lines = ["   ".join(groups).rstrip(), "   ".join(sub).rstrip()]
    lines.append("-" * len(lines[1]))
    for line in body:
        parts = [line[0].ljust(width0)]
        for j in range(len(columns)):
            parts.append("  ".join(v.rjust(x) for v, x in zip(line[1 + 4 * j: 5 + 4 * j], widths[4 * j: 4 * j + 4])))
        lines.append("   ".join(parts).rstrip())
    return "\n".join(lines)
