"""Choosing the transfer program's (ϑ, K, ρ) by cross-validation over the seen classes.

ResT (§4.1) obtains ``(ϑ, K, ρ)`` "with 5-fold cross-validation on the training class labels": the
seen classes are split into folds; each fold in turn plays "unseen". For a fold
and a grid point, the relatedness between the fold's labels and the remaining seen labels is
solved by the transfer program (HiGHS, :func:`~zsar.zeroshot.transfer_assignment`), the fold's
prototypes are composited from the remaining classes' prototypes (Eq. 6), and the fold's videos are
classified among the fold's classes by the nearest composite prototype (cosine). The grid point with
the best mean top-1 over the folds wins.

The paper does not list its grid. The default here spans what its text implies: ``K`` up to 10
nearest labels, ``ρ`` up to 5 seen classes per unseen class (its "clap" example composites 4), and
``ϑ`` from 0 (the relative-distance constraint off) to 0.9 (a seen class is dropped when another
unseen class is nearly as close to it).

Tie rule: among grid points whose mean top-1 equals the best (within 1e-12), the one with the
smallest ``ρ``, then the smallest ``K``, then the smallest ``ϑ`` is chosen, i.e. the transfer using
the fewest seen classes and the least filtering. Points with ``ρ > K`` give the same assignment as
``ρ = K``, so the rule also picks the canonical one of such duplicates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .._utils import as_numpy
from .transfer import composite_prototypes, cosine_similarity_matrix, transfer_assignment

__all__ = ["HeadSelection", "SelectionResult", "select_transfer_params", "DEFAULT_THETAS", "DEFAULT_KS", "DEFAULT_RHOS"]

DEFAULT_THETAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)
DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10)
DEFAULT_RHOS: tuple[int, ...] = (1, 2, 3, 4, 5)
_TIE_TOL = 1e-12
_SCORE_TIE = 1e-12


@dataclass(frozen=True)
class HeadSelection:
    """How a zero-shot head's parameters are chosen by cross-validation over the seen classes (ResT
    §4.1: "5-fold cross-validation on the training class labels"); a config section (``head_selection``).

    Attributes:
        thetas, ks, rhos: the grid of the transfer program's (ϑ, K, ρ) (see the module docstring).
        n_folds: folds of seen classes, each in turn playing "unseen".
        seed: permutes the classes before they are cut into folds.
    """

    thetas: tuple[float, ...] = DEFAULT_THETAS
    ks: tuple[int, ...] = DEFAULT_KS
    rhos: tuple[int, ...] = DEFAULT_RHOS
    n_folds: int = 5
    seed: int = 0

    def __post_init__(self):
        for name in ("thetas", "ks", "rhos"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.n_folds < 2:
            raise ValueError(f"head_selection.n_folds must be >= 2, got {self.n_folds}")


@dataclass(frozen=True)
class SelectionResult:
    """Outcome of :func:`select_transfer_params`.

    Attributes:
        theta, k, rho:
            The chosen parameters (pass them to ``transfer_assignment`` or ``ZeroShotClassifier``).
        score:
            Mean top-1 over the folds at the chosen point.
        grid:
            One dict per grid point, in evaluation order: ``theta``, ``k``, ``rho``, ``mean_top1``,
            ``std_top1`` (population std over the folds) and ``fold_top1`` (list, one per fold).
        fold_scores:
            ``(n_points, n_folds)`` top-1 array, rows in the order of ``grid``.
        folds:
            The seen-class indices of each fold.
    """

    theta: float
    k: int
    rho: int
    score: float
    grid: list[dict] = field(repr=False)
    fold_scores: np.ndarray = field(repr=False)
    folds: list[np.ndarray] = field(repr=False)

    @property
    def best_params(self) -> dict:
        """``{"theta": ϑ, "k": K, "rho": ρ}``, ready to splat into ``ZeroShotClassifier(...)``."""
        return {"theta": self.theta, "k": self.k, "rho": self.rho}

    def table(self) -> str:
        """The grid as a text table, best mean top-1 first."""
        rows = sorted(self.grid, key=lambda r: (-r["mean_top1"], r["rho"], r["k"], r["theta"]))
        lines = [f"{'theta':>6} {'K':>4} {'rho':>4} {'top1 mean':>10} {'std':>7}"]
        for r in rows:
            lines.append(
                f"{r['theta']:6.3g} {r['k']:4d} {r['rho']:4d} {100 * r['mean_top1']:9.2f}% {100 * r['std_top1']:6.2f}"
            )
        return "\n".join(lines)


def _check_grid(name: str, values, kind) -> list:
    values = list(values)
    if not values:
        raise ValueError(f"{name} must list at least one value")
    out = []
    for v in values:
        if kind is int:
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 0:
                raise ValueError(f"{name} must hold ints >= 0, got {v!r}")
            out.append(int(v))
        else:
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"{name} must hold finite numbers, got {v!r}")
            out.append(v)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicate values: {values}")
    return out


def _make_folds(n_classes: int, n_folds, seed, folds) -> list[np.ndarray]:
    if folds is not None:
        out = []
        seen: set[int] = set()
        for f in folds:
            f = np.asarray(f)
            if f.ndim != 1 or f.size == 0 or not np.issubdtype(f.dtype, np.integer):
                raise ValueError("folds must be non-empty 1-D sequences of seen-class indices")
            if f.min() < 0 or f.max() >= n_classes:
                raise ValueError(f"fold indices must be in [0, {n_classes}), got range [{f.min()}, {f.max()}]")
            if len(set(f.tolist())) != f.size or seen & set(f.tolist()):
                raise ValueError("folds must not repeat a class (within or across folds)")
            if f.size == n_classes:
                raise ValueError("a fold cannot hold every seen class: no classes would remain to transfer from")
            seen |= set(f.tolist())
            out.append(f.astype(np.int64))
        if not out:
            raise ValueError("folds is empty")
        return out
    if isinstance(n_folds, bool) or not isinstance(n_folds, Integral) or n_folds < 2:
        raise ValueError(f"n_folds must be an int >= 2, got {n_folds!r}")
    # Two classes per fold at least: a one-class fold scores top-1 = 1 whatever the parameters.
    if n_classes < 2 * n_folds:
        raise ValueError(f"{n_folds}-fold selection needs at least {2 * n_folds} seen classes, got {n_classes}")
    perm = np.random.default_rng(seed).permutation(n_classes)
    return [np.sort(f) for f in np.array_split(perm, n_folds)]


def select_transfer_params(
    features,
    labels,
    label_embeddings,
    prototypes=None,
    *,
    thetas: Sequence[float] = DEFAULT_THETAS,
    ks: Sequence[int] = DEFAULT_KS,
    rhos: Sequence[int] = DEFAULT_RHOS,
    n_folds: int = 5,
    seed: int = 0,
    folds: Sequence[Sequence[int]] | None = None,
    capacity: int | None = None,
    progress: bool = True,
) -> SelectionResult:
    """Choose ``(ϑ, K, ρ)`` by k-fold cross-validation over the seen classes (ResT §4.1).

    Args:
        features (array-like or torch.Tensor, shape (N, D)):
            Visual representations of seen-class videos (e.g. ResT's ``encode_video`` outputs).
        labels (array-like of int, shape (N,)):
            Seen-class index of each video, in ``[0, S)``.
        label_embeddings (array-like or torch.Tensor, shape (S, E)):
            Label embedding of each seen class (relatedness is their cosine similarity).
        prototypes (array-like or torch.Tensor, shape (S, D), optional):
            Seen visual prototypes; by default the mean of each class's ``features`` (every class then
            needs at least one video).
        thetas, ks, rhos (sequences):
            The grid (see the module docstring for the defaults and the tie rule).
        n_folds, seed (int):
            Classes are permuted with ``numpy.random.default_rng(seed)`` and split into ``n_folds`` near-
            equal folds (at least two classes each).
        folds (sequence of sequences of int, optional):
            Explicit disjoint folds of seen-class indices instead of the seeded split (they need not
            cover every class; classes outside all folds only ever serve as "seen").
        capacity (int, optional):
            Passed to :func:`~zsar.zeroshot.transfer_assignment`.
        progress (bool):
            Show a tqdm bar over the grid points.

    Returns:
        SelectionResult:

    Raises:
        ValueError:
            Shape mismatches, NaN, out-of-range labels, an empty grid, too few classes for the folds, a
            fold without videos, or a fold class unrelated (cosine ≤ 0) to every remaining seen class, for
            which no composite prototype exists.
    """
    x = as_numpy(features).astype(np.float64, copy=False)
    y = as_numpy(labels)
    emb = as_numpy(label_embeddings).astype(np.float64, copy=False)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"label_embeddings must be a non-empty (S, E) array, got shape {emb.shape}")
    n_classes = emb.shape[0]
    if y.ndim != 1 or y.size != x.shape[0]:
        raise ValueError(f"labels must have shape ({x.shape[0]},) to match features {x.shape}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must hold integer seen-class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"labels must be in [0, {n_classes}) (rows of label_embeddings), got range [{y.min()}, {y.max()}]"
        )
    for name, arr in (("features", x), ("label_embeddings", emb)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or inf")
    counts = np.bincount(y, minlength=n_classes)
    if prototypes is None:
        if (counts == 0).any():
            raise ValueError(
                f"seen classes {np.flatnonzero(counts == 0)[:10].tolist()} have no videos; "
                "pass prototypes or give every class at least one video"
            )
        protos = np.zeros((n_classes, x.shape[1]))
        np.add.at(protos, y, x)
        protos /= counts[:, None]
    else:
        protos = as_numpy(prototypes).astype(np.float64, copy=False)
        if protos.shape != (n_classes, x.shape[1]):
            raise ValueError(
                f"prototypes must have shape ({n_classes}, {x.shape[1]}) (classes × feature dim), got {protos.shape}"
            )
        if not np.isfinite(protos).all():
            raise ValueError("prototypes contains NaN or inf")
    thetas = _check_grid("thetas", thetas, float)
    ks = _check_grid("ks", ks, int)
    rhos = _check_grid("rhos", rhos, int)
    fold_list = _make_folds(n_classes, n_folds, seed, folds)

    # Everything that does not depend on the grid point, once per fold.
    prepared = []
    for fi, fold in enumerate(fold_list):
        rest = np.setdiff1d(np.arange(n_classes), fold)
        m = cosine_similarity_matrix(emb[fold], emb[rest])
        unrelated = np.flatnonzero(m.max(axis=1) <= 0)
        if unrelated.size:
            raise ValueError(
                f"fold {fi}: seen classes {fold[unrelated][:10].tolist()} have cosine <= 0 to every remaining "
                "seen class, so no composite prototype exists for them (check the label embeddings)"
            )
        in_fold = np.isin(y, fold)
        if not in_fold.any():
            raise ValueError(f"fold {fi} (classes {fold[:10].tolist()}) has no videos")
        # Position of each video's class within the fold: the "unseen" label to predict.
        position = np.full(n_classes, -1)
        position[fold] = np.arange(fold.size)
        target = position[y[in_fold]]
        prepared.append((m, x[in_fold], target, protos[rest]))

    grid = [(t, k, r) for t in thetas for k in ks for r in rhos]
    scores = np.zeros((len(grid), len(fold_list)))
    caches: list[dict] = [{} for _ in fold_list]
    for gi, (theta, k, rho) in enumerate(tqdm(grid, desc="transfer CV", disable=not progress, leave=False)):
        for fi, (m, xf, target, rest_protos) in enumerate(prepared):
            a = transfer_assignment(m, k, theta, rho, capacity=capacity)
            # Several grid points give the same assignment (e.g. ρ > K); classify once per assignment.
            key = np.packbits(a).tobytes()
            if key not in caches[fi]:
                fold_protos = composite_prototypes(rest_protos, m, a)
                sims = cosine_similarity_matrix(xf, fold_protos)
                # Fold classes given the same seen classes get identical prototypes, but BLAS may round
                # their similarities differently; treat near-equal scores as the tie they are (lowest
                # index wins, as in nearest_prototype).
                pred = (sims >= sims.max(axis=1, keepdims=True) - _SCORE_TIE).argmax(axis=1)
                caches[fi][key] = float(np.mean(pred == target))
            scores[gi, fi] = caches[fi][key]

    means = scores.mean(axis=1)
    best_mean = means.max()
    tied = [i for i in range(len(grid)) if means[i] >= best_mean - _TIE_TOL]
    best = min(tied, key=lambda i: (grid[i][2], grid[i][1], grid[i][0]))
    table = [
        {
            "theta": t,
            "k": k,
            "rho": r,
            "mean_top1": float(means[i]),
            "std_top1": float(scores[i].std()),
            "fold_top1": scores[i].tolist(),
        }
        for i, (t, k, r) in enumerate(grid)
    ]
    theta, k, rho = grid[best]
    return SelectionResult(theta, k, rho, float(means[best]), table, scores, fold_list)
