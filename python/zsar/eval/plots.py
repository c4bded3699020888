"""Figures of the semantic transfer (ResT Fig. 3 and Fig. 4), written to image files.

Figures are built on :class:`matplotlib.figure.Figure` directly, which renders with the Agg canvas
and never touches pyplot's global state or needs a display; each function returns the written path
(the format follows the suffix: ``.png``, ``.pdf``, ``.svg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .._utils import as_numpy

__all__ = ["plot_transfer_matrices", "plot_tsne"]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def _check_labels(name: str, labels, n: int) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(x) for x in labels]
    if len(labels) != n:
        raise ValueError(f"{name} has {len(labels)} entries, expected {n}")
    return labels


def plot_transfer_matrices(
    relatedness,
    assignment,
    path,
    unseen_labels: Sequence[str] | None = None,
    seen_labels: Sequence[str] | None = None,
    max_labels: int = 40,
    title: str | None = None,
) -> Path:
    """Relatedness matrix and binary adjacency side by side (ResT Fig. 3).

    Left: ``M`` (unseen × seen cosine similarities; brighter is larger). Right: the assignment ``A``
    (black is an edge). Axis tick labels are drawn when an axis has at most ``max_labels`` entries.

    Parameters
    ----------
    relatedness : (U, S) array-like or tensor
    assignment : (U, S) binary array-like or tensor (e.g. from ``transfer_assignment``)
    path : str or Path
        Output file; parent directories are created.
    unseen_labels, seen_labels : sequences of str, optional
        Row and column names.
    max_labels : int
        Largest axis that still gets tick labels.
    title : str, optional

    Returns
    -------
    pathlib.Path
    """
    m = as_numpy(relatedness).astype(np.float64)
    a = as_numpy(assignment)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"relatedness must be a non-empty 2-D (unseen × seen) matrix, got shape {m.shape}")
    if a.shape != m.shape:
        raise ValueError(f"assignment must have the shape of relatedness {m.shape}, got {a.shape}")
    if not np.isfinite(m).all():
        raise ValueError("relatedness contains NaN or inf")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("assignment must be binary (bool or 0/1)")
    rows = _check_labels("unseen_labels", unseen_labels, m.shape[0])
    cols = _check_labels("seen_labels", seen_labels, m.shape[1])

    # Size the figure with the matrix so cells stay roughly square, within sane bounds.
    cell = 0.28 if max(m.shape) <= max_labels else 6.0 / max(m.shape)
    w = float(np.clip(m.shape[1] * cell, 3.0, 9.0))
    h = float(np.clip(m.shape[0] * cell + 1.2, 2.5, 9.0))
    fig = _figure(2 * w + 1.5, h)
    ax_m, ax_a = fig.subplots(1, 2)
    im = ax_m.imshow(m, cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax_m, shrink=0.8, label="relatedness $m_{ji}$")
    ax_a.imshow(a.astype(float), cmap="gray_r", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax_m.set_title("semantic relatedness M")
    ax_a.set_title("adjacency A")
    for ax in (ax_m, ax_a):
        ax.set_xlabel("seen classes")
        ax.set_ylabel("unseen classes")
        if rows is not None and len(rows) <= max_labels:
            ax.set_yticks(range(len(rows)), rows, fontsize=6)
        if cols is not None and len(cols) <= max_labels:
            ax.set_xticks(range(len(cols)), cols, fontsize=6, rotation=90)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_tsne(
    features,
    labels,
    path,
    prototypes=None,
    class_names: Sequence[str] | None = None,
    perplexity: float = 30.0,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """t-SNE of video representations coloured by class, composite prototypes as stars (ResT Fig. 4).

    Videos and prototypes are embedded together, so the stars sit in the same map as the points.

    Parameters
    ----------
    features : (N, D) array-like or tensor
        Representations of the (unseen-class) test videos.
    labels : (N,) ints in ``[0, C)``
        Class of each video.
    path : str or Path
        Output file.
    prototypes : (C, D) array-like or tensor, optional
        Class prototypes (e.g. composite prototypes from Eq. 6), row ``j`` for class ``j``.
    class_names : sequence of str, optional
        Legend entries (drawn for at most 30 classes).
    perplexity : float
        t-SNE perplexity, clipped to ``n − 1`` for ``n`` embedded points (sklearn needs it below n).
    seed : int
        t-SNE random state.
    title : str, optional

    Returns
    -------
    pathlib.Path
    """
    from sklearn.manifold import TSNE

    x = as_numpy(features).astype(np.float64)
    y = as_numpy(labels)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError(f"labels must be ({x.shape[0]},) non-negative class indices, got shape {y.shape}, dtype {y.dtype}")
    n_classes = int(y.max()) + 1
    protos = None
    if prototypes is not None:
        protos = as_numpy(prototypes).astype(np.float64)
        if protos.ndim != 2 or protos.shape[1] != x.shape[1] or protos.shape[0] < n_classes:
            raise ValueError(
                f"prototypes must be (C, {x.shape[1]}) with C >= {n_classes} (one row per class), got {protos.shape}"
            )
        n_classes = protos.shape[0]
    names = _check_labels("class_names", class_names, n_classes) if class_names is not None else None
    points = x if protos is None else np.vstack([x, protos])
    if not np.isfinite(points).all():
        raise ValueError("features or prototypes contain NaN or inf")
    n = points.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points (videos + prototypes), got {n}")
    perplexity = float(min(perplexity, n - 1))
    # Exact gradients are faster than Barnes-Hut at figure sizes (and avoid its thread start-up);
    # Barnes-Hut keeps large sets (O(n log n) instead of O(n^2)) tractable.
    method = "exact" if n <= 1000 else "barnes_hut"
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", method=method,
               random_state=seed).fit_transform(points)

    import matplotlib

    # Distinct qualitative colours up to 20 classes, a continuous map beyond (Fig. 4 shows 30).
    if n_classes <= 20:
        colors = matplotlib.colormaps["tab20"](np.arange(n_classes))
    else:
        colors = matplotlib.colormaps["turbo"](np.linspace(0, 1, n_classes))
    fig = _figure(6.5 if names and n_classes <= 30 else 5.0, 5.0)
    ax = fig.subplots()
    for c in range(n_classes):
        sel = y == c
        label = names[c] if names and n_classes <= 30 else None
        if sel.any():
            ax.scatter(emb[: x.shape[0]][sel, 0], emb[: x.shape[0]][sel, 1], s=8, color=colors[c], alpha=0.7, label=label)
    if protos is not None:
        star = emb[x.shape[0]:]
        ax.scatter(star[:, 0], star[:, 1], marker="*", s=160, c=colors[: star.shape[0]], edgecolors="black",
                   linewidths=0.8)
        # Legend entry in neutral colours: the stars take their class's colour.
        ax.scatter([], [], marker="*", s=160, c="white", edgecolors="black", linewidths=0.8, label="prototypes")
    if (names and n_classes <= 30) or protos is not None:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of visual representations")
    return _save(fig, path)
