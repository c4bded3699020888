"""Zero-shot baselines the transfer program is compared against (ResT Tables 3(b) and 5).

"Semantic space" baseline (ResT, Table 3(b)): classify the video among the *seen* classes with the
trained model, then map the predicted seen label to the unseen label nearest to it in the label
embedding space, i.e. the unseen class ``j`` maximising ``m_{j, i*}`` where ``i*`` is the predicted
seen class and ``M`` the (unseen × seen) cosine relatedness of label embeddings.
"""

from __future__ import annotations

import numpy as np

from .._utils import as_numpy
from .transfer import _check_relatedness

__all__ = ["semantic_space_baseline", "semantic_space_scores"]


def semantic_space_baseline(seen_pred, relatedness) -> np.ndarray:
    """Unseen-class prediction of the "semantic space" baseline (ResT Table 3(b) / Table 5).

    Each video's predicted seen class ``i*`` is replaced by ``argmax_j m_{j, i*}``: the unseen label
    most related to it (ties go to the lowest unseen index).

    Args:
        seen_pred: ``(N,)`` each video's predicted seen-class index in ``[0, S)``, or ``(N, S)``
            seen-class scores (higher is better: logits, probabilities, similarities) whose per-row
            argmax is taken first (ties: lowest seen index); array-like or tensor.
        relatedness: ``(U, S)`` ``m_ji``, the cosine similarity of unseen label ``j`` and seen label
            ``i`` (in ``[-1, 1]``).

    Returns:
        ``(N,)`` int64 predicted unseen-class index per video.

    Raises:
        TypeError: scores that are not real-valued, or indices that are not integers.
        ValueError: non-2-D / empty / non-finite / out-of-range ``relatedness``; ``seen_pred`` of
            the wrong rank, with a column count other than ``S``, with NaN scores, or with
            out-of-range indices.
    """
    m = _check_relatedness(relatedness)
    # One argmax per seen class (argmax keeps the lowest j on ties), then a lookup per video.
    nearest_unseen = m.argmax(axis=0)
    return nearest_unseen[_seen_prediction(seen_pred, m.shape)].astype(np.int64, copy=False)


def _seen_prediction(seen_pred, shape: tuple[int, int]) -> np.ndarray:
    """``(N,)`` predicted seen-class indices from indices or ``(N, S)`` scores, checked against the
    relatedness matrix's ``shape``."""
    n_seen = shape[1]
    pred = as_numpy(seen_pred)
    if pred.ndim == 2:
        if pred.shape[1] != n_seen:
            raise ValueError(
                f"seen_pred scores must have one column per seen class: shape (N, {n_seen}) to match "
                f"relatedness {shape}, got {pred.shape}"
            )
        if not (np.issubdtype(pred.dtype, np.floating) or np.issubdtype(pred.dtype, np.integer)):
            raise TypeError(f"seen_pred scores must be real-valued, got dtype {pred.dtype}")
        if pred.shape[0] and np.isnan(pred).any():
            raise ValueError("seen_pred scores contain NaN")
        pred = pred.argmax(axis=1) if pred.shape[0] else np.zeros(0, dtype=np.int64)
    elif pred.ndim == 1:
        if pred.size and not np.issubdtype(pred.dtype, np.integer):
            raise TypeError(
                f"seen_pred of shape (N,) must hold integer seen-class indices, got dtype {pred.dtype} "
                "(pass (N, S) scores to have their argmax taken)"
            )
        pred = pred.astype(np.int64, copy=False)
        if pred.size and (pred.min() < 0 or pred.max() >= n_seen):
            raise ValueError(
                f"seen_pred indices must be in [0, {n_seen}) (seen classes of relatedness {shape}), "
                f"got range [{pred.min()}, {pred.max()}]"
            )
    else:
        raise ValueError(f"seen_pred must be (N,) seen-class indices or (N, S) scores, got shape {pred.shape}")
    return pred


def semantic_space_scores(seen_pred, relatedness) -> np.ndarray:
    """``(N, U)`` scores of the "semantic space" baseline: row ``n`` ranks the unseen labels by their
    relatedness ``m_{j, i*}`` to the video's predicted seen class ``i*`` (its argmax is
    :func:`semantic_space_baseline`; the ranking gives the baseline's top-5). Arguments and errors as
    :func:`semantic_space_baseline`."""
    m = _check_relatedness(relatedness)
    return m[:, _seen_prediction(seen_pred, m.shape)].T
