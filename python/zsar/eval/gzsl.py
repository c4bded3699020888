"""Generalized zero-shot metrics with calibrated stacking (the AVCA / MZST protocol).

Given the distances ``dist`` ``(N, C)`` of N test samples to all C classes (smaller is closer),
their true classes and the disjoint ``seen`` and ``unseen`` class sets of the split:

* **GZSL**: the search space is seen ∪ unseen (columns outside it never win). A sample's prediction
  is the argmin over that space after adding a constant ``beta`` to the seen classes' distances
  (calibrated stacking, Chao et al. 2016); argmin ties go to the lowest class index. ``S`` and ``U``
  are the mean class accuracies (mean per-class recall, :func:`~zsar.eval.mean_class_accuracy`)
  over the samples of seen and of unseen classes; ``HM = 2SU / (S + U)``.
* **ZSL**: the samples of unseen classes, searched among the unseen classes only; mean class
  accuracy (``beta`` plays no part).
* **Calibration**: ``beta`` is chosen on a validation split as the value of a grid (AVCA: 16 values
  evenly spaced in [0, 3]) with the highest HM, the smallest such value on ties, and then applied
  unchanged to the test split. Accuracies are exact fractions rounded once
  (:mod:`zsar.eval.metrics`), so which betas tie does not depend on floating-point summation order.

Distances are L2 (Euclidean, AVCA's choice) or cosine (``1 − cos``) between predicted semantic
vectors (or representations) and class embeddings: :func:`class_distances`. All numbers are
fractions in [0, 1]; tables print percents.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Sequence

import numpy as np
import torch

from .._utils import as_numpy
from ..zeroshot import cosine_similarity_matrix
from .metrics import exact_harmonic_mean, exact_mean_class_accuracy, mean_class_accuracy

__all__ = [
    "DEFAULT_BETA_GRID",
    "DISTANCE_METRICS",
    "class_distances",
    "gzsl_scores",
    "gzsl_curve",
    "calibrate_beta",
    "gzsl_per_class_accuracy",
    "per_class_accuracy",
]

#: AVCA's calibration grid: 16 values evenly spaced in [0, 3] (steps of 0.2).
DEFAULT_BETA_GRID = np.linspace(0.0, 3.0, 16)
DISTANCE_METRICS = ("l2", "cosine")
# Rows of x per block in class_distances: bounds the (rows, C, E) difference tensor of the exact
# (non-matmul) Euclidean distance to about 64 MiB of float64.
_DISTANCE_BLOCK_BYTES = 64 << 20


def class_distances(x, class_embeddings, metric: str = "l2") -> np.ndarray:
    """Distances of predicted vectors to class embeddings.

    Args:
        x: ``(N, E)`` predicted semantic vectors or representations (array-like or tensor).
        class_embeddings: ``(C, E)`` one row per class.
        metric: ``"l2"`` (Euclidean distance, not squared, as AVCA's ``cdist``) or ``"cosine"``
            (``1 − cos``; norms floored at 1e-8 as in :func:`zsar.zeroshot.cosine_similarity_matrix`).

    Returns:
        ``(N, C)`` float64 distances.

    Raises:
        ValueError: unknown metric, shapes that are not ``(N, E)`` and ``(C, E)``, or NaN/inf inputs.
    """
    if metric not in DISTANCE_METRICS:
        raise ValueError(f"metric must be one of {DISTANCE_METRICS}, got {metric!r}")
    a = torch.as_tensor(as_numpy(x), dtype=torch.float64)
    b = torch.as_tensor(as_numpy(class_embeddings), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"x (N, E) and class_embeddings (C, E) must share E, got {tuple(a.shape)} and {tuple(b.shape)}")
    if b.shape[0] == 0:
        raise ValueError("class_embeddings has no rows")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("x or class_embeddings contains NaN or inf")
    if metric == "cosine":
        return 1.0 - cosine_similarity_matrix(a.numpy(), b.numpy())
    # The exact form sqrt(sum((x - c)^2)), not |x|^2 + |c|^2 - 2x.c, so that near-ties are decided
    # like an independent implementation decides them.
    rows = max(1, _DISTANCE_BLOCK_BYTES // (8 * max(1, b.shape[0] * b.shape[1])))
    out = [torch.cdist(a[i:i + rows], b, compute_mode="donot_use_mm_for_euclid_dist")
           for i in range(0, a.shape[0], rows)]
    return torch.cat(out).numpy() if out else np.zeros((0, b.shape[0]))


def _class_set(name: str, classes, n_classes: int) -> np.ndarray:
    arr = np.asarray(as_numpy(classes))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of class indices, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_classes:
        raise ValueError(f"{name} must be in [0, {n_classes}) (columns of dist), got [{arr.min()}, {arr.max()}]")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} repeats class indices")
    return np.sort(arr).astype(np.int64)


class _Split:
    """Validated inputs shared by the GZSL functions: distances restricted to the search space."""

    def __init__(self, dist, labels, seen, unseen):
        d = np.asarray(as_numpy(dist), dtype=np.float64)
        y = np.asarray(as_numpy(labels))
        if d.ndim != 2 or d.shape[0] == 0:
            raise ValueError(f"dist must be a non-empty (N, C) matrix, got shape {d.shape}")
        if y.shape != (d.shape[0],):
            raise ValueError(f"labels must have shape ({d.shape[0]},) (one per row of dist), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
        seen = _class_set("seen", seen, d.shape[1])
        unseen = _class_set("unseen", unseen, d.shape[1])
        if np.intersect1d(seen, unseen).size:
            raise ValueError(f"seen and unseen share classes {np.intersect1d(seen, unseen)[:5].tolist()}")
        # Ascending column order: argmin's first minimum is then the lowest class index.
        self.space = np.union1d(seen, unseen)
        outside = ~np.isin(y, self.space)
        if outside.any():
            raise ValueError(f"labels {np.unique(y[outside])[:5].tolist()} are neither seen nor unseen classes")
        sub = d[:, self.space]
        if np.isnan(sub).any():
            raise ValueError("dist contains NaN in the columns of seen or unseen classes")
        self.dist = sub
        self.labels = y.astype(np.int64)
        self.is_seen_column = np.isin(self.space, seen)
        self.seen_rows = np.isin(y, seen)
        self.unseen_rows = ~self.seen_rows
        self.unseen = unseen

    def gzsl_predictions(self, beta: float) -> np.ndarray:
        shifted = self.dist + np.where(self.is_seen_column, beta, 0.0)
        return self.space[np.argmin(shifted, axis=1)]

    def exact_accuracies(self, pred: np.ndarray) -> tuple:
        """S, U, HM as exact fractions (None where a group has no samples)."""
        s = _mca(self.labels[self.seen_rows], pred[self.seen_rows])
        u = _mca(self.labels[self.unseen_rows], pred[self.unseen_rows])
        return s, u, (None if s is None or u is None else exact_harmonic_mean(s, u))

    def accuracies(self, pred: np.ndarray) -> tuple[float, float, float]:
        return tuple(_float(v) for v in self.exact_accuracies(pred))

    def zsl_predictions(self) -> np.ndarray:
        """Predictions of the unseen-class samples among the unseen classes only."""
        cols = ~self.is_seen_column
        return self.space[cols][np.argmin(self.dist[self.unseen_rows][:, cols], axis=1)]

    def zsl(self) -> float:
        if not self.unseen_rows.any():
            return math.nan
        return mean_class_accuracy(self.labels[self.unseen_rows], self.zsl_predictions())


def _mca(y: np.ndarray, pred: np.ndarray):
    return exact_mean_class_accuracy(y, pred) if y.size else None


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _beta(value) -> float:
    if isinstance(value, bool):
        raise TypeError("beta must be a real number, got bool")
    try:
        beta = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"beta must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    return beta


def gzsl_scores(dist, labels, seen: Sequence[int], unseen: Sequence[int], beta: float = 0.0) -> dict:
    """S, U, HM (GZSL with calibrated stacking) and ZSL of one split.

    Args:
        dist: ``(N, C)`` distances of N samples to all C classes (e.g. from :func:`class_distances`);
            columns outside ``seen`` ∪ ``unseen`` never win. ``+inf`` is allowed (never chosen unless
            a whole row is infinite), NaN is not.
        labels: ``(N,)`` true class indices, each in ``seen`` or ``unseen``.
        seen, unseen: disjoint lists of class indices (columns of ``dist``).
        beta: added to the distances of the seen classes before the GZSL argmin.

    Returns:
        ``{"S", "U", "HM", "ZSL"}`` as fractions. ``S`` (``U``) is NaN when no sample belongs to a
        seen (unseen) class; ``HM`` is then NaN too, and ``ZSL`` is NaN without unseen samples.

    Raises:
        ValueError: shapes, out-of-range or overlapping class sets, labels outside the search
            space, NaN distances in it, or a non-finite ``beta``.
    """
    split = _Split(dist, labels, seen, unseen)
    s, u, hm = split.accuracies(split.gzsl_predictions(_beta(beta)))
    return {"S": s, "U": u, "HM": hm, "ZSL": split.zsl()}


def _grid(grid) -> np.ndarray:
    g = DEFAULT_BETA_GRID if grid is None else np.asarray(as_numpy(grid), dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(f"grid must be a non-empty 1-D list of betas, got shape {g.shape}")
    if not np.isfinite(g).all():
        raise ValueError("grid contains NaN or inf")
    return g


def gzsl_curve(dist, labels, seen: Sequence[int], unseen: Sequence[int], grid=None) -> dict:
    """GZSL scores at every beta of a grid (the S/U trade-off) and the calibrated choice.

    Args:
        dist, labels, seen, unseen: as in :func:`gzsl_scores`; both seen and unseen classes must
            have samples.
        grid: betas to try (default :data:`DEFAULT_BETA_GRID`, 16 values evenly in [0, 3]).

    Returns:
        ``{"beta": [...], "S": [...], "U": [...], "HM": [...], "ZSL": float, "best": i}``: lists
        aligned with the grid (in the grid's order) and the index of the chosen beta (highest HM,
        the smallest beta among equal HMs).

    Raises:
        ValueError: as :func:`gzsl_scores`, an empty or non-finite grid, or a split without seen or
            without unseen samples (HM would be undefined).
    """
    split = _Split(dist, labels, seen, unseen)
    if not (split.seen_rows.any() and split.unseen_rows.any()):
        which = "seen" if not split.seen_rows.any() else "unseen"
        raise ValueError(f"calibration needs samples of seen and unseen classes; no sample of an {which} class")
    g = _grid(grid)
    rows = [split.exact_accuracies(split.gzsl_predictions(float(b))) for b in g]
    # HMs compared as exact fractions: equal counts are a tie however the floats would round.
    top = max(hm for _, _, hm in rows)
    best = min((i for i, (_, _, hm) in enumerate(rows) if hm == top), key=lambda i: g[i])
    s, u, hm = ([float(v) for v in col] for col in zip(*rows))
    return {"beta": g.tolist(), "S": s, "U": u, "HM": hm, "ZSL": split.zsl(), "best": int(best)}


def calibrate_beta(dist, labels, seen: Sequence[int], unseen: Sequence[int], grid=None) -> float:
    """The calibrated-stacking beta of ``grid`` with the highest HM on a validation split.

    Args:
        dist, labels, seen, unseen: as in :func:`gzsl_scores`, on the validation split.
        grid: candidate betas (default :data:`DEFAULT_BETA_GRID`: 16 values evenly in [0, 3]).

    Returns:
        The chosen beta; among betas of equal (highest) HM, the smallest.

    Raises:
        ValueError: as :func:`gzsl_curve`.
    """
    curve = gzsl_curve(dist, labels, seen, unseen, grid)
    return float(curve["beta"][curve["best"]])


def gzsl_per_class_accuracy(dist, labels, seen: Sequence[int], unseen: Sequence[int], beta: float = 0.0) -> dict:
    """Per-class recall behind :func:`gzsl_scores`: the terms whose means are S, U and ZSL.

    Args:
        dist, labels, seen, unseen, beta: as in :func:`gzsl_scores`.

    Returns:
        ``{"gzsl": (C,), "zsl": (C,)}`` float64 arrays over all C columns of ``dist``: GZSL recall
        (search space seen ∪ unseen, ``beta`` added to seen classes) of every class with samples,
        and ZSL recall (unseen classes only) of every unseen class with samples; NaN elsewhere.
    """
    split = _Split(dist, labels, seen, unseen)
    n_classes = np.asarray(as_numpy(dist)).shape[1]
    gzsl = per_class_accuracy(split.labels, split.gzsl_predictions(_beta(beta)), n_classes)
    zsl = np.full(n_classes, np.nan)
    if split.unseen_rows.any():
        zsl = per_class_accuracy(split.labels[split.unseen_rows], split.zsl_predictions(), n_classes)
    return {"gzsl": gzsl, "zsl": zsl}


def per_class_accuracy(labels, predictions, n_classes: int) -> np.ndarray:
    """Per-class recall: for each class, the fraction of its samples predicted as it.

    Args:
        labels, predictions: ``(N,)`` class indices in ``[0, n_classes)``.
        n_classes: number of classes C.

    Returns:
        ``(C,)`` float64; NaN for classes without samples. Its nan-mean over the classes present is
        :func:`~zsar.eval.mean_class_accuracy`.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    y, p = np.asarray(as_numpy(labels)), np.asarray(as_numpy(predictions))
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"labels and predictions must be 1-D of one length, got {y.shape} and {p.shape}")
    for name, v in (("labels", y), ("predictions", p)):
        if v.size and (not np.issubdtype(v.dtype, np.integer) or v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} must be class indices in [0, {n_classes})")
    count = np.bincount(y, minlength=n_classes).astype(np.float64)
    hits = np.bincount(y, weights=(y == p), minlength=n_classes)
    return np.where(count > 0, hits / np.maximum(count, 1.0), np.nan)
