"""Open-set answers: a per-label "does this video show it" probability and a "none of these" answer.

The softmax of :meth:`~zsar.zeroshot.ZeroShotClassifier.predict_proba` sums to 1 over the given
labels, so a video of none of them (a test pattern, speech) still gets ~1 for some label, and adding
an unrelated label changes every probability. The open-set score of a label is instead a function of
that label's similarity alone: ``sigmoid(scale * s + bias)`` (Platt scaling), so it does not change
when other labels are added (with the uncoupled transfer program each label's prototype depends only
on that label and the seen classes). A video whose best label scores below 0.5 is "none of these".

``scale`` and ``bias`` are fitted on held-out *seen* classes, so that the calibration sees labels the
same way zero-shot labels are seen: the seen classes are split into folds; for each fold the head is
rebuilt without the fold's classes (ResT: their prototypes removed, so each fold class's prototype is
transferred from the other classes, as an unseen label's is) and the fold's videos are scored against
the fold's labels: a video and its own class is a positive, a video and any other fold class a
negative. The logistic loss, with positives and negatives weighted equally in total, is minimised by
Newton's method in float64. The result is stored in the checkpoint's ``zeroshot.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["OpenSetCalibration", "calibration_pairs", "fit_platt", "calibrate_open_set"]


@dataclass(frozen=True)
class OpenSetCalibration:
    """``P(video shows label) = sigmoid(scale * similarity + bias)``.

    Attributes:
        scale, bias: the fitted parameters.
        threshold: the similarity at which the probability is 0.5 (``-bias / scale``).
        videos, classes: how many held-out seen videos and classes it was fitted on.
    """

    scale: float
    bias: float
    videos: int = 0
    classes: int = 0

    @property
    def threshold(self) -> float:
        return -self.bias / self.scale

    def probability(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-label probabilities of head ``scores`` (any shape), each from its own score alone."""
        return torch.sigmoid(self.scale * scores.double() + self.bias).float()

    def answer(self, scores: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the best label's index per row of ``scores`` ``(N, C)``, -1 ("none of these") where no
        label's probability reaches 0.5."""
        match = self.probability(scores)
        best = match.argmax(1)
        return torch.where(match.max(1).values >= 0.5, best, torch.full_like(best, -1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "open_set") -> "OpenSetCalibration":
        """The calibration stored by :meth:`to_dict`; ``ValueError`` naming ``where`` when malformed."""
        if not isinstance(data, dict) or not {"scale", "bias"} <= set(data) or set(data) - {"scale", "bias", "videos",
                                                                                              "classes"}:
            raise ValueError(f"{where}: expected an object with scale, bias, videos, classes, got {data!r}")
        scale, bias = data["scale"], data["bias"]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (scale, bias)) or scale <= 0:
            raise ValueError(f"{where}: scale must be a finite number > 0 and bias finite, got {scale!r}, {bias!r}")
        return cls(float(scale), float(bias), int(data.get("videos", 0)), int(data.get("classes", 0)))


def fit_platt(scores: np.ndarray, positive: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """``(scale, bias)`` minimising the class-balanced logistic loss of ``sigmoid(scale * s + bias)``
    against ``positive`` (bool), by Newton's method in float64 (a small ridge keeps separable data finite).

    Raises:
        ValueError: no positive or no negative pair.
    """
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(positive, bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        raise ValueError(f"open-set calibration needs positive and negative pairs, got {n_pos} and {n_neg}")
    w = np.where(y, 0.5 / n_pos, 0.5 / n_neg)
    mu, sd = float(np.sum(w * s)), float(np.sqrt(np.sum(w * (s - np.sum(w * s)) ** 2))) or 1.0
    z = (s - mu) / sd  # standardised, so the ridge and the start do not depend on the score's units
    design = np.stack([z, np.ones_like(z)], 1)
    theta = np.zeros(2)
    ridge = 1e-4
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (w * (p - y)) + ridge * np.array([theta[0], 0.0])
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + ridge * np.diag([1.0, 0.0]) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-12:
            break
    a, b = theta
    return float(a / sd), float(b - a * mu / sd)


def calibration_pairs(head, embedder, model, x: torch.Tensor, labels: torch.Tensor, seen_labels: Sequence[str],
                      folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Similarities of held-out seen videos to held-out seen labels and whether each pair is a match
    (see the module docstring). ``x`` ``(N, D)``: representations; ``labels`` ``(N,)``: indices into
    ``seen_labels``."""
    labels = torch.as_tensor(labels).long()
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        raise ValueError(f"open-set calibration needs videos of at least 2 seen classes, got {len(present)}")
    folds = max(1, min(folds, len(present) // 2))
    order = np.random.default_rng(seed).permutation(present)
    scores, positive = [], []
    for fold in np.array_split(order, folds):
        fold = sorted(int(c) for c in fold)
        held = head.holding_out(fold)
        matrix = held.class_matrix([seen_labels[c] for c in fold], embedder, model)
        rows = torch.isin(labels, torch.tensor(fold))
        s = held.scores(torch.as_tensor(x)[rows], matrix).double().numpy()
        truth = labels[rows].numpy()[:, None] == np.array(fold)[None, :]
        scores.append(s.ravel())
        positive.append(truth.ravel())
    return np.concatenate(scores), np.concatenate(positive)


def calibrate_open_set(head, embedder, model, x: torch.Tensor, labels: torch.Tensor, seen_labels: Sequence[str],
                       folds: int = 5, seed: int = 0) -> OpenSetCalibration:
    """Fit :class:`OpenSetCalibration` on held-out seen classes (see the module docstring)."""
    s, y = calibration_pairs(head, embedder, model, x, labels, seen_labels, folds, seed)
    scale, bias = fit_platt(s, y)
    if not scale > 0:
        raise ValueError(f"open-set calibration: similarity does not rise with a match on the held-out seen classes "
                         f"(fitted scale {scale:.3g}); the representation does not separate them")
    return OpenSetCalibration(scale, bias, videos=int(len(torch.as_tensor(labels))),
                              classes=len(set(torch.as_tensor(labels).tolist())))
