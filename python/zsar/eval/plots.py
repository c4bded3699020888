"""Figures, written to image files: the semantic transfer (ResT Fig. 3 and Fig. 4), MZSL-50 accuracy
per relatedness bucket, and the GZSL seen/unseen trade-off over the calibration beta.

Figures are built on :class:`matplotlib.figure.Figure` directly, which renders with the Agg canvas
and never touches pyplot's global state or needs a display; each function returns the written path
(the format follows the suffix: ``.png``, ``.pdf``, ``.svg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .._utils import as_numpy, write_atomic
from .relatedness import MZSL50_BUCKETS

__all__ = ["plot_transfer_matrices", "plot_tsne", "plot_bucket_accuracy", "plot_gzsl_tradeoff"]


def _figure(width: float, height: float):
    # deferred: matplotlib takes ~0.5 s to import
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def figure_format(path) -> str:
    """The image format of a figure file: its suffix (png without one).

    Raises:
        ValueError: matplotlib cannot write that format (naming the ones it can).
    """
    # deferred: matplotlib takes ~0.5 s to import
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(f"{path}: matplotlib cannot write .{fmt} files; use one of "
                         + ", ".join(f".{f}" for f in sorted(formats)))
    return fmt


def _save(fig, path) -> Path:
    """Writes the figure to ``path`` (:func:`figure_format`) atomically: a failure or a kill leaves the
    previous figure whole."""
    path = Path(path)
    fmt = figure_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: fig.savefig(f, dpi=150, format=fmt))


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

    Args:
        relatedness: ``(U, S)`` relatedness matrix (array-like or tensor).
        assignment: ``(U, S)`` binary adjacency (e.g. from ``transfer_assignment``).
        path: output file; parent directories are created.
        unseen_labels: optional row names.
        seen_labels: optional column names.
        max_labels: largest axis that still gets tick labels.
        title: optional figure title.

    Returns:
        The written path.

    Raises:
        ValueError: an empty or non-finite matrix, an assignment of another shape or not binary, or
            label lists of the wrong length.
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
    prototype_label: str = "prototypes",
) -> Path:
    """t-SNE of video representations coloured by class, composite prototypes as stars (ResT Fig. 4).

    Videos and prototypes are embedded together, so the stars sit in the same map as the points.

    Args:
        features: ``(N, D)`` representations of the (unseen-class) test videos.
        labels: ``(N,)`` class of each video, ints in ``[0, C)``.
        path: output file.
        prototypes: optional ``(C, D)`` class prototypes (e.g. the composite prototypes of ResT
            Eq. 6), row ``j`` for class ``j``.
        class_names: optional legend entries (drawn for at most 30 classes).
        perplexity: t-SNE perplexity, clipped to ``n − 1`` for ``n`` embedded points (sklearn needs
            it below n).
        seed: t-SNE random state.
        title: optional figure title.
        prototype_label: the legend entry of the stars (e.g. "class embeddings" for MZST's targets).

    Returns:
        The written path.

    Raises:
        ValueError: empty or mismatched features, labels or prototypes.
    """
    # deferred: scikit-learn takes ~7 s to import
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

    # deferred: matplotlib takes ~0.5 s to import
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
        ax.scatter([], [], marker="*", s=160, c="white", edgecolors="black", linewidths=0.8, label=prototype_label)
    if (names and n_classes <= 30) or protos is not None:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of visual representations")
    return _save(fig, path)


def plot_bucket_accuracy(scores, path, title: str | None = None) -> Path:
    """Grouped bars of MZSL-50 accuracy per relatedness bucket (easy, medium, hard) and the score.

    Args:
        scores: one :func:`zsar.eval.mzsl50_score` result, or ``{model name: result}`` for several
            models side by side (as the paper's Table 3).
        path: output file; parent directories are created.
        title: optional figure title.

    Returns:
        The written path. Empty buckets (NaN) get no bar; bar labels are percents.

    Raises:
        ValueError: no results, or a result without the ``easy``/``medium``/``hard``/``score`` keys.
    """
    runs = {"": scores} if isinstance(scores, dict) and "score" in scores else dict(scores)
    if not runs:
        raise ValueError("scores: no results to plot")
    groups = [*MZSL50_BUCKETS, "score"]  # "score": the class-weighted mean of the three
    for name, r in runs.items():
        if not isinstance(r, dict) or any(k not in r for k in groups):
            raise ValueError(f"scores[{name!r}] must be an mzsl50_score result (keys {groups})")
    fig = _figure(1.6 + 1.2 * len(groups) * max(1, len(runs)) ** 0.5, 3.6)
    ax = fig.subplots()
    width = 0.8 / len(runs)
    x = np.arange(len(groups))
    for i, (name, r) in enumerate(runs.items()):
        values = np.array([100 * float(r[g]) for g in groups])
        shown = ~np.isnan(values)
        bars = ax.bar(x[shown] + (i - (len(runs) - 1) / 2) * width, values[shown], width,
                      label=name or None)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    counts = next(iter(runs.values())).get("counts", {})
    ax.set_xticks(x, [f"{g}\n({counts[g]} classes)" if g in counts else g for g in groups])
    ax.set_ylabel("mean class accuracy (%)")
    ax.set_ylim(0, max(5.0, ax.get_ylim()[1] * 1.1))
    if any(runs):
        ax.legend(fontsize=8, frameon=False)
    ax.set_title(title or "MZSL-50 accuracy by semantic relatedness")
    return _save(fig, path)


def plot_gzsl_tradeoff(curve, path, chosen_beta: float | None = None, title: str | None = None) -> Path:
    """The seen/unseen trade-off of calibrated stacking over beta, with the chosen beta marked.

    Left: S, U and HM against beta. Right: U against S, one point per beta, the chosen one starred.

    Args:
        curve: ``{"beta", "S", "U"[, "HM"]}`` lists aligned with the grid, e.g. from
            :func:`zsar.eval.gzsl_curve` or a protocol report's ``stage_2["curve"]``.
        path: output file; parent directories are created.
        chosen_beta: the beta to mark (default: the curve's ``best`` index, else none).
        title: optional figure title.

    Returns:
        The written path.

    Raises:
        ValueError: lists of different lengths, empty, non-finite, or a ``chosen_beta`` not on the grid.
    """
    beta = np.asarray(curve["beta"], dtype=np.float64)
    s = np.asarray(curve["S"], dtype=np.float64)
    u = np.asarray(curve["U"], dtype=np.float64)
    if beta.ndim != 1 or beta.size == 0 or s.shape != beta.shape or u.shape != beta.shape:
        raise ValueError(f"curve: beta, S and U must be non-empty lists of one length, got "
                         f"{beta.shape}, {s.shape}, {u.shape}")
    hm = np.asarray(curve["HM"], dtype=np.float64) if "HM" in curve else 2 * s * u / np.maximum(s + u, 1e-300)
    if not all(np.isfinite(v).all() for v in (beta, s, u, hm)):
        raise ValueError("curve contains NaN or inf")
    chosen = None
    if chosen_beta is not None:
        hits = np.flatnonzero(np.isclose(beta, float(chosen_beta), rtol=0, atol=1e-12))
        if hits.size == 0:
            raise ValueError(f"chosen_beta {chosen_beta} is not one of the curve's betas")
        chosen = int(hits[0])
    elif "best" in curve:
        chosen = int(curve["best"])
    order = np.argsort(beta, kind="stable")
    fig = _figure(9.0, 3.6)
    ax_b, ax_su = fig.subplots(1, 2)
    for values, name in ((s, "S (seen)"), (u, "U (unseen)"), (hm, "HM")):
        ax_b.plot(beta[order], 100 * values[order], marker="o", markersize=3, label=name)
    ax_b.set_xlabel("calibration beta (added to seen-class distances)")
    ax_b.set_ylabel("mean class accuracy (%)")
    ax_su.plot(100 * s[order], 100 * u[order], marker="o", markersize=3, color="gray")
    ax_su.set_xlabel("S (%)")
    ax_su.set_ylabel("U (%)")
    if chosen is not None:
        ax_b.axvline(beta[chosen], color="black", linestyle="--", linewidth=0.8,
                     label=f"chosen beta {beta[chosen]:.2f}")
        ax_su.scatter([100 * s[chosen]], [100 * u[chosen]], marker="*", s=180, color="crimson", zorder=3,
                      label=f"beta {beta[chosen]:.2f}: HM {100 * hm[chosen]:.2f}")
        ax_su.legend(fontsize=8, frameon=False)
    ax_b.legend(fontsize=8, frameon=False)
    fig.suptitle(title or "GZSL seen/unseen trade-off (calibrated stacking)")
    return _save(fig, path)
