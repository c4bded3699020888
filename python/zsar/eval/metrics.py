"""Classification metrics of the zero-shot protocols.

* ResT protocol: top-k accuracy over test videos (:func:`top_k_accuracy`).
* MZST / AVCA protocol: mean class accuracy (:func:`mean_class_accuracy`) and, for generalized
  zero-shot learning, the harmonic mean of seen and unseen accuracies (:func:`harmonic_mean`).

Inputs may be lists, NumPy arrays or torch tensors (any device); results are Python floats in [0, 1].

Mean class accuracy and the harmonic mean are computed in exact rational arithmetic and rounded
once: the value is the float nearest the true fraction, whatever the order of summation. Calibration
and epoch selection compare these numbers for equality (the smallest beta / earliest epoch among
equal HMs), so a tie in the counts is a tie in the floats on every machine: summed in floating point,
S = 7/30 from one set of per-class recalls and U = 7/30 from another differed in the last bit, and
which of two mathematically equal betas won depended on the summation order.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Integral

import numpy as np

from .._utils import as_numpy

__all__ = ["top_k_accuracy", "mean_class_accuracy", "harmonic_mean"]




def _check_labels(name: str, y: np.ndarray) -> None:
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")


def top_k_accuracy(y_true, scores, k: int = 1) -> float:
    """Fraction of samples whose true class is among the ``k`` highest-scoring classes.

    Ties are broken by a stable descending sort: among equal scores the lower class index ranks
    first. A sample is a hit iff (classes scoring strictly higher) + (classes with the same score and
    a lower index) ``< k``, so ties never inflate the accuracy beyond one ranking of the classes.

    Args:
        y_true: ``(N,)`` true class indices in ``[0, C)`` (array-like or tensor of ints).
        scores: ``(N, C)`` scores, higher is better (logits, similarities, negative distances).
        k: ``1 <= k <= C``.

    Returns:
        Accuracy in ``[0, 1]``.

    Raises:
        TypeError: ``k`` not an int, or non-integer labels.
        ValueError: shape or length mismatch, empty input, out-of-range labels, NaN scores, or ``k``
            outside ``[1, C]``.
    """
    y = as_numpy(y_true)
    s = as_numpy(scores)
    _check_labels("y_true", y)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (N, C), got shape {s.shape}")
    if s.shape[0] != y.size:
        raise ValueError(f"y_true has {y.size} samples but scores has {s.shape[0]} rows")
    n_classes = s.shape[1]
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= n_classes:
        raise ValueError(f"k must be in [1, {n_classes}] (number of classes), got {k}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y_true values must be in [0, {n_classes}), got range [{y.min()}, {y.max()}]")
    if np.isnan(s).any():
        raise ValueError("scores contains NaN")
    true_score = s[np.arange(y.size), y][:, None]
    lower_index = np.arange(n_classes)[None, :] < y[:, None]
    rank = (s > true_score).sum(axis=1) + ((s == true_score) & lower_index).sum(axis=1)
    return float(np.mean(rank < k))


def mean_class_accuracy(y_true, y_pred) -> float:
    """Mean over the classes present in ``y_true`` of the per-class recall (AVCA protocol).

    Args:
        y_true: ``(N,)`` true labels (array-like or tensor; any comparable labels, e.g. ints or
            strings).
        y_pred: ``(N,)`` predicted labels. Classes that are only predicted, never true, do not
            contribute a term.

    Returns:
        Mean class accuracy in ``[0, 1]``.

    Raises:
        ValueError: empty input, non-1-D input or length mismatch.
    """
    y = as_numpy(y_true)
    p = as_numpy(y_pred)
    _check_labels("y_true", y)
    _check_labels("y_pred", p)
    if y.size != p.size:
        raise ValueError(f"y_true has {y.size} samples but y_pred has {p.size}")
    return float(exact_mean_class_accuracy(y, p))


def exact_mean_class_accuracy(y: np.ndarray, p: np.ndarray) -> Fraction:
    """Mean per-class recall of checked 1-D label arrays as an exact fraction."""
    _, cls, count = np.unique(y, return_inverse=True, return_counts=True)
    hits = np.bincount(cls.reshape(-1), weights=(y == p), minlength=count.size).astype(np.int64)
    # Classes of equal size share a denominator: one fraction per distinct size keeps this cheap.
    sizes, group = np.unique(count, return_inverse=True)
    hits_per_size = np.bincount(group, weights=hits, minlength=sizes.size)
    total = sum((Fraction(int(h), int(n)) for h, n in zip(hits_per_size, sizes)), Fraction(0))
    return total / count.size


def exact_harmonic_mean(s: Fraction, u: Fraction) -> Fraction:
    """``2SU / (S + U)`` of exact accuracies (0 when both are 0)."""
    return Fraction(0) if s + u == 0 else 2 * s * u / (s + u)


def harmonic_mean(seen_acc: float, unseen_acc: float) -> float:
    """GZSL harmonic mean ``HM = 2SU / (S + U)`` of seen and unseen accuracies (0 when both are 0).

    Args:
        seen_acc: seen-class accuracy S in ``[0, 1]`` (Python, NumPy or 0-d torch scalar).
        unseen_acc: unseen-class accuracy U in ``[0, 1]``.

    Returns:
        HM in ``[0, 1]``.

    Raises:
        ValueError: an accuracy that is not a finite number in ``[0, 1]``.
    """
    s, u = float(seen_acc), float(unseen_acc)
    for name, v in (("seen_acc", s), ("unseen_acc", u)):
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    # Exact from the two floats, rounded once: symmetric in S and U to the last bit.
    return float(exact_harmonic_mean(Fraction(s), Fraction(u)))
