"""Semantic relatedness transfer (ResT paper §3.3, Eq. 1-6).

Unseen-class visual prototypes are composited from seen-class prototypes. The seen classes used for
each unseen class come from a binary integer program over the relatedness matrix ``M`` (unseen ×
seen cosine similarities of label embeddings)::

    maximise   Σ_ji m_ji · a_ji                  (1)
    subject to a_ji ≤ 1[i ∈ KNN_K(j)]            (2)
               a_ji ≤ Λ(j, i)                    (3)
               Σ_i a_ji ≤ ρ                      (4)
               Σ_j a_ji ≤ c   (optional capacity coupling, not in the paper)

and the composite prototype of unseen class ``j`` is the relatedness-weighted mean (Eq. 6)
``φ̂_j = Σ_i a_ji·m_ji·φ_i / Σ_i a_ji·m_ji``.

Conventions shared by every function here (one implementation, :func:`_allowed_edges`):

* **KNN (Eq. 2).** The ``K`` seen classes nearest to unseen ``j`` by distance ``1 − m_ji``; ties go to
  the lower seen index. Ranking is done on ``m_ji`` (descending), which is the same order in exact
  arithmetic and avoids ``1 − m`` rounding distinct similarities to one distance. ``K ≥ κ`` keeps
  every seen class; ``K = 0`` keeps none.
* **Relative distance (Eq. 3, 5).** ``Λ(j, i) = 0`` iff ``min_{k≠j} (1 − m_ki) / (1 − m_ji) ≤ ϑ``,
  with ``k`` ranging over the *other unseen* classes: seen class ``i`` is not used for ``j`` when
  some other unseen class is much closer to ``i`` than ``j`` is. Zero distances (identical
  embeddings): ``x / 0 = +∞`` for ``x > 0`` (nothing is relatively closer to ``i`` than ``j``
  itself, so ``Λ = 1`` for any finite ``ϑ``) and ``0 / 0 = 1`` (two unseen classes both identical to
  ``i`` are equally close, the limit of equal distances). With a single unseen class the minimum is
  over an empty set and ``Λ = 1``.
* **Positive edges only.** Edges with ``m_ji ≤ 0`` never increase the objective, so they are left out
  of the program: the solution is then unique up to ties in ``m`` and every selected edge has a
  positive Eq. 6 weight.
* **Fallback.** A row left with no edge (``ρ = 0``, ``K = 0``, every ``Λ`` zero, no positive
  neighbour) gets, with ``fallback="nearest"``, the single most related seen class
  (``argmax_i m_ji``, lowest index on ties), outside the constraints (it may exceed the capacity);
  with ``fallback="none"`` the row stays empty. If that nearest class has ``m_ji ≤ 0`` the row's
  Eq. 6 denominator is not positive and :func:`composite_prototypes` refuses it.
* Similarities must lie in ``[−1, 1]`` up to a rounding slack of ``1e-6`` (cosines computed in
  float32 can exceed 1 slightly); they are clipped to ``[−1, 1]`` so distances are never negative.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import NamedTuple

import highspy
import numpy as np
import torch

from .._utils import as_numpy

__all__ = [
    "transfer_assignment",
    "transfer_assignment_closed_form",
    "composite_prototypes",
    "nearest_prototype",
    "cosine_similarity_matrix",
]

_FALLBACKS = ("nearest", "none")
# Slack above |m| = 1 tolerated before an input is rejected as "not a cosine similarity".
_COSINE_SLACK = 1e-6
# Norm floor of cosine similarity, as in torch.nn.functional.cosine_similarity: zero vectors score 0.
_NORM_EPS = 1e-8


class _Edges(NamedTuple):
    """Edges allowed by Eq. 2, 3 and positivity, grouped by unseen row.

    ``rows``/``cols``/``weights`` are flat arrays; within a row, edges are ordered by decreasing
    ``m`` (ties: lower seen index first), so the first ``ρ`` edges of a row are its closed-form optimum.
    """

    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray




def _check_relatedness(relatedness) -> np.ndarray:
    m = as_numpy(relatedness)
    if m.ndim != 2:
        raise ValueError(f"relatedness must be 2-D (unseen × seen), got shape {m.shape}")
    if m.size == 0:
        raise ValueError(f"relatedness must be non-empty, got shape {m.shape}")
    if not (np.issubdtype(m.dtype, np.floating) or np.issubdtype(m.dtype, np.integer)):
        raise ValueError(f"relatedness must be real-valued, got dtype {m.dtype}")
    m = m.astype(np.float64, copy=False)
    # max/min propagate NaN and expose ±inf, so two reductions replace a full isfinite() pass.
    lo, hi = m.min(), m.max()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("relatedness contains NaN or inf")
    if lo < -1.0 - _COSINE_SLACK or hi > 1.0 + _COSINE_SLACK:
        raise ValueError(
            f"relatedness must hold cosine similarities in [-1, 1], found values in [{lo:.6g}, {hi:.6g}]"
        )
    return np.clip(m, -1.0, 1.0) if lo < -1.0 or hi > 1.0 else m


def _check_count(name: str, value) -> int:
    # bool is an Integral but True as "K" is almost certainly a bug at the call site.
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def check_transfer_params(k, theta, rho, fallback: str = "nearest") -> tuple[int, float, int]:
    """``(k, theta, rho)`` as :func:`transfer_assignment` takes them; raises TypeError / ValueError naming
    the parameter otherwise (also for a ``fallback`` it does not know)."""
    k = _check_count("k", k)
    rho = _check_count("rho", rho)
    # (a string that reads as a number is one: YAML 1.1 reads `theta: 1e-1` as the string '1e-1')
    if isinstance(theta, bool) or not isinstance(theta, (int, float, str, np.integer, np.floating)):
        raise TypeError(f"theta must be a number, got {theta!r}")
    try:
        theta = float(theta)
    except ValueError:
        raise TypeError(f"theta must be a number, got {theta!r}") from None
    if not math.isfinite(theta):
        raise ValueError(f"theta must be finite, got {theta}")
    if fallback not in _FALLBACKS:
        raise ValueError(f"fallback must be one of {_FALLBACKS}, got {fallback!r}")
    return k, theta, rho


def _knn(m: np.ndarray, k: int) -> np.ndarray:
    """``(γ, k)`` seen indices of the ``k`` largest ``m_ji`` per row, by decreasing ``m``, ties by index."""
    n_unseen, n_seen = m.shape
    if k == 0:
        return np.zeros((n_unseen, 0), dtype=np.intp)
    if k >= n_seen:
        return np.argsort(-m, axis=1, kind="stable")
    # Partition finds each row's k-th largest value t: entries >= t are in, except that a row with
    # ties at t admits them by increasing index until it has k (partition breaks ties arbitrarily).
    t = np.partition(m, n_seen - k, axis=1)[:, n_seen - k : n_seen - k + 1]
    chosen = m >= t
    crowded = np.flatnonzero(chosen.sum(axis=1) > k)
    if crowded.size:
        sub, t_sub = m[crowded], t[crowded]
        above, tie = sub > t_sub, sub == t_sub
        room = k - above.sum(axis=1, keepdims=True)
        chosen[crowded] = above | (tie & (np.cumsum(tie, axis=1) <= room))
    cols = np.nonzero(chosen)[1].reshape(n_unseen, k)  # row-major: ascending index within a row
    order = np.argsort(-np.take_along_axis(m, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


def _allowed_edges(m: np.ndarray, k: int, theta: float) -> _Edges:
    """Edges surviving Eq. 2 (KNN), Eq. 3/5 (relative distance) and ``m > 0``; see the module doc."""
    n_unseen, n_seen = m.shape
    cand = _knn(m, min(k, n_seen))
    rows = np.broadcast_to(np.arange(n_unseen)[:, None], cand.shape)
    m_cand = np.take_along_axis(m, cand, axis=1)
    keep = m_cand > 0
    if n_unseen > 1:
        # min over other unseen k of (1 − m_ki) = 1 − (max over k ≠ j of m_ki): the column maximum,
        # unless j attains it, where the maximum is recomputed without row j (few such edges).
        other = m.max(axis=0)[cand]
        own = m_cand == other
        sub = m[:, cand[own]]
        sub[rows[own], np.arange(sub.shape[1])] = -np.inf
        other[own] = sub.max(axis=0)
        num = 1.0 - other
        den = 1.0 - m_cand
        ratio = np.divide(num, den, out=np.full(cand.shape, np.inf), where=den > 0)
        ratio[(den <= 0) & (num <= 0)] = 1.0
        keep &= ratio > theta
    return _Edges(rows[keep], cand[keep], m_cand[keep])


def _assignment_from_edges(m: np.ndarray, rows, cols, fallback: str) -> np.ndarray:
    a = np.zeros(m.shape, dtype=bool)
    a[rows, cols] = True
    if fallback == "nearest":
        empty = np.flatnonzero(~a.any(axis=1))
        a[empty, m[empty].argmax(axis=1)] = True
    return a


def transfer_assignment_closed_form(
    relatedness, k: int, theta: float, rho: int, fallback: str = "nearest"
) -> np.ndarray:
    """Optimum of the uncoupled transfer program (Eq. 1-4) in closed form.

    Without coupling constraints the program separates by row and each row is a cardinality-
    constrained selection, so the optimum is "per row, the ``ρ`` largest positive allowed ``m_ji``"
    (ties: lower seen index first). This is the oracle for :func:`transfer_assignment` and the fast
    path when no capacity is needed.

    Args:
        relatedness (array-like or torch.Tensor, shape (γ, κ)):
            ``m_ji``: cosine similarity of unseen label ``j`` and seen label ``i``, in ``[-1, 1]``.
        k (int):
            ``K`` of Eq. 2 (nearest seen labels per unseen label), ``>= 0``.
        theta (float):
            ``ϑ`` of Eq. 5 (relative-distance threshold), finite.
        rho (int):
            ``ρ`` of Eq. 4 (most seen classes per unseen class), ``>= 0``.
        fallback ({"nearest", "none"}):
            What an unseen row left with no edge gets: its most related seen class, or nothing.

    Returns:
        numpy.ndarray of bool, shape (γ, κ):
            The assignment ``A``.

    Raises:
        ValueError, TypeError:
            Invalid inputs (see the module docstring for the conventions).
    """
    m = _check_relatedness(relatedness)
    k, theta, rho = check_transfer_params(k, theta, rho, fallback)
    edges = _allowed_edges(m, k, theta)
    # Edges are grouped by row in decreasing m, so an edge's rank in its row is its offset from
    # the row's first edge.
    starts = np.searchsorted(edges.rows, edges.rows)
    take = np.arange(edges.rows.size) - starts < rho
    return _assignment_from_edges(m, edges.rows[take], edges.cols[take], fallback)


def transfer_assignment(
    relatedness,
    k: int,
    theta: float,
    rho: int,
    capacity: int | None = None,
    time_limit: float = 10.0,
    fallback: str = "nearest",
) -> np.ndarray:
    """Solve the semantic-transfer integer program (ResT Eq. 1-5) with HiGHS.

    Variables exist only for allowed edges (Eq. 2, Eq. 3 and ``m_ji > 0``), so those constraints are
    variable elimination; the model keeps the row budgets (Eq. 4) and, with ``capacity``, the column
    budgets, and is passed to HiGHS in one ``passModel`` call. The MIP gap is set to 0, so an
    ``Optimal`` status means a proven optimum. (Both constraint families form the incidence matrix of
    a bipartite graph, which is totally unimodular, so the LP relaxation is already integral.)

    Args:
        relatedness (array-like or torch.Tensor, shape (γ, κ)):
            ``m_ji``: cosine similarity of unseen label ``j`` and seen label ``i``, in ``[-1, 1]``.
        k (int):
            ``K`` of Eq. 2 (nearest seen labels per unseen label, ties by lower index), ``>= 0``.
        theta (float):
            ``ϑ`` of Eq. 5 (relative-distance threshold), finite.
        rho (int):
            ``ρ`` of Eq. 4 (most seen classes per unseen class), ``>= 0``.
        capacity (int, optional):
            ``c >= 1``: each seen class serves at most ``c`` unseen classes (couples the rows). ``None``
            leaves the program separable, with the same optimum as
            :func:`transfer_assignment_closed_form`.
        time_limit (float):
            HiGHS time limit in seconds, ``> 0``.
        fallback ({"nearest", "none"}):
            What an unseen row left with no edge gets: its most related seen class (``argmax_i m_ji``,
            outside the constraints), or nothing.

    Returns:
        numpy.ndarray of bool, shape (γ, κ):
            The assignment ``A``. Without a fallback edge, ``Σ m ⊙ A`` is the program's optimum.

    Raises:
        ValueError, TypeError:
            Invalid inputs (see the module docstring for the conventions).
        RuntimeError:
            HiGHS did not prove optimality (e.g. the time limit was reached); the status is named.
    """
    m = _check_relatedness(relatedness)
    k, theta, rho = check_transfer_params(k, theta, rho, fallback)
    if capacity is not None:
        capacity = _check_count("capacity", capacity)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
    time_limit = float(time_limit)
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")

    edges = _allowed_edges(m, k, theta)
    if edges.rows.size:
        chosen = _solve(edges, m.shape, rho, capacity, time_limit)
        rows, cols = edges.rows[chosen], edges.cols[chosen]
    else:
        rows = cols = np.zeros(0, dtype=np.intp)
    return _assignment_from_edges(m, rows, cols, fallback)


def _budget_rows(groups: np.ndarray, n_groups: int, bound: int):
    """Constraints ``Σ_{e in group g} x_e ≤ bound`` for the groups that can exceed it.

    Returns ``(start, index)`` in CSR form over the variables (one entry per variable of a binding
    group) and the number of rows. Groups with at most ``bound`` edges cannot violate their budget
    and are left out, which keeps the model small.
    """
    counts = np.bincount(groups, minlength=n_groups)
    binding = counts > bound
    var = np.argsort(groups, kind="stable")
    var = var[binding[groups[var]]]
    start = np.concatenate(([0], np.cumsum(counts[binding])))
    return start, var, int(binding.sum())


def _quiet_highs():
    """A HiGHS solver that writes nothing to stdout (``zsar predict --json`` prints JSON there).

    HiGHS prints its banner at the first method call unless ``output_flag`` is already off, and
    ``highspy.Highs()`` calls one (it enables callbacks) inside its constructor, so the banner is out
    before any option can be set. The core binding it wraps, ``highspy._Highs`` (exported by
    highspy), calls nothing on construction: setting ``output_flag`` first silences every line.
    Older highspy releases without it exported the core binding as ``Highs``.
    """
    h = getattr(highspy, "_Highs", highspy.Highs)()
    h.setOptionValue("output_flag", False)
    return h


def _solve(edges: _Edges, shape, rho: int, capacity: int | None, time_limit: float) -> np.ndarray:
    """Boolean mask over ``edges`` of the HiGHS optimum."""
    n_var = edges.rows.size
    start, index, n_row = _budget_rows(edges.rows, shape[0], rho)
    upper = [np.full(n_row, float(rho))]
    if capacity is not None:
        c_start, c_index, c_rows = _budget_rows(edges.cols, shape[1], capacity)
        start = np.concatenate((start, c_start[1:] + start[-1]))
        index = np.concatenate((index, c_index))
        upper.append(np.full(c_rows, float(capacity)))
        n_row += c_rows
    row_upper = np.concatenate(upper)

    h = _quiet_highs()
    h.setOptionValue("time_limit", time_limit)
    h.setOptionValue("mip_rel_gap", 0.0)
    status = h.passModel(
        n_var,
        n_row,
        index.size,
        highspy.MatrixFormat.kRowwise,
        highspy.ObjSense.kMaximize,
        0.0,
        edges.weights.astype(np.float64),  # col_cost
        np.zeros(n_var),  # col_lower
        np.ones(n_var),  # col_upper
        np.full(n_row, -highspy.kHighsInf),  # row_lower
        row_upper,
        start.astype(np.int32),
        index.astype(np.int32),
        np.ones(index.size),  # a_value
        np.full(n_var, int(highspy.HighsVarType.kInteger), dtype=np.int32),
    )
    if status == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS rejected the transfer model (passModel returned kError)")
    h.run()
    model_status = h.getModelStatus()
    if model_status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(
            f"HiGHS did not solve the transfer program to optimality: status "
            f"{h.modelStatusToString(model_status)!r} ({model_status.name}), time_limit={time_limit} s"
        )
    return np.asarray(h.getSolution().col_value) > 0.5


def composite_prototypes(seen_prototypes, relatedness, assignment):
    """Unseen-class prototypes as relatedness-weighted means of seen prototypes (ResT Eq. 6).

    ``φ̂_j = Σ_i a_ji·m_ji·φ_i / Σ_i a_ji·m_ji``.

    Args:
        seen_prototypes (numpy.ndarray or torch.Tensor, shape (κ, D)):
            ``φ_i``: mean visual representation of each seen class.
        relatedness (array-like or torch.Tensor, shape (γ, κ)):
            ``m_ji`` (finite).
        assignment (array-like or torch.Tensor, shape (γ, κ)):
            Binary ``A`` (bool or 0/1), e.g. from :func:`transfer_assignment`.

    Returns:
        numpy.ndarray or torch.Tensor, shape (γ, D):
            Same kind as ``seen_prototypes``; a tensor keeps its dtype and device, an array is float64
            (or its own floating dtype).

    Raises:
        ValueError:
            Shape mismatch, non-binary assignment, non-finite relatedness, or an unseen row whose
            denominator ``Σ_i a_ji·m_ji`` is ``<= 0`` (no edge, or non-positive weights).
    """
    is_tensor = isinstance(seen_prototypes, torch.Tensor)
    protos = seen_prototypes if is_tensor else np.asarray(seen_prototypes)
    m = as_numpy(relatedness).astype(np.float64, copy=False)
    a = as_numpy(assignment)
    if protos.ndim != 2:
        raise ValueError(f"seen_prototypes must be 2-D (κ, D), got shape {tuple(protos.shape)}")
    if m.ndim != 2 or m.shape[1] != protos.shape[0]:
        raise ValueError(
            f"relatedness must have shape (γ, κ={protos.shape[0]}) to match seen_prototypes, got {m.shape}"
        )
    if a.shape != m.shape:
        raise ValueError(f"assignment shape {a.shape} does not match relatedness shape {m.shape}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("assignment must be binary (bool or 0/1)")
    if not np.isfinite(m).all():
        raise ValueError("relatedness contains NaN or inf")
    w = a.astype(np.float64) * m
    den = w.sum(axis=1)
    bad = np.flatnonzero(den <= 0)
    if bad.size:
        raise ValueError(
            f"unseen rows {bad[:10].tolist()}{'...' if bad.size > 10 else ''} have Σ a·m <= 0: "
            "no assigned seen class with positive relatedness, so Eq. 6 is undefined"
        )
    w /= den[:, None]
    if is_tensor:
        return torch.as_tensor(w, dtype=protos.dtype, device=protos.device) @ protos
    dtype = protos.dtype if np.issubdtype(protos.dtype, np.floating) else np.float64
    return w.astype(dtype) @ protos.astype(dtype, copy=False)


def cosine_similarity_matrix(a, b):
    """Pairwise cosine similarities of the rows of ``a`` and ``b``.

    Args:
        a (numpy.ndarray or torch.Tensor, shape (N, D)):
        b (array-like or torch.Tensor, shape (C, D)):
            Converted to the kind (and, for tensors, dtype and device) of ``a``.

    Returns:
        numpy.ndarray or torch.Tensor, shape (N, C):
            Same kind as ``a`` (float64 for arrays). Norms are floored at 1e-8, as in
            ``torch.nn.functional.cosine_similarity``, so a zero vector has similarity 0 to everything.
    """
    if isinstance(a, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
        _check_pair(tuple(a.shape), tuple(b.shape))
        an = a / a.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
        bn = b / b.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
        return an @ bn.T
    a = np.asarray(a, dtype=np.float64)
    b = as_numpy(b).astype(np.float64, copy=False)
    _check_pair(a.shape, b.shape)
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), _NORM_EPS)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), _NORM_EPS)
    return an @ bn.T


def _check_pair(a_shape: tuple, b_shape: tuple) -> None:
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != b_shape[1]:
        raise ValueError(f"expected (N, D) and (C, D) inputs with the same D, got {a_shape} and {b_shape}")


def nearest_prototype(features, prototypes):
    """Index of the cosine-nearest prototype for each feature (ResT §3.3.2: ``argmin_j d(x, φ̂_j)``).

    Args:
        features (numpy.ndarray or torch.Tensor, shape (N, D)):
        prototypes (array-like or torch.Tensor, shape (C, D)):

    Returns:
        numpy.ndarray of int64 or torch.Tensor of int64, shape (N,):
            Same kind as ``features``; ties go to the lowest prototype index.
    """
    # Identical prototypes (common with rho = 1) must score identically for the tie rule to hold,
    # but a matrix product may round equal columns differently: score each distinct row once.
    if isinstance(prototypes, torch.Tensor):
        unique, inverse = torch.unique(prototypes, dim=0, return_inverse=True)
    else:
        unique, inverse = np.unique(np.asarray(prototypes), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
    sim = cosine_similarity_matrix(features, unique)[:, inverse]
    # argmin of cosine distance 1 − s is argmax of s.
    return sim.argmax(dim=1) if isinstance(sim, torch.Tensor) else sim.argmax(axis=1)
