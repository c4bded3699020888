"""Zero-shot evaluation protocols of ResT and E2E (Brattoli et al. 2020).

* **0/50**: ``n_splits`` (10) random half-class splits of the target dataset; split ``i`` draws its
  classes with ``numpy.random.default_rng(i)`` (seed = split index). The model is evaluated on the
  videos of the chosen classes with those classes as the only candidates; metrics are reported per
  split and as mean ± std (population std, ``ddof=0``) over the splits.
* **0/100**: one "split" with every class of the target dataset.

Both are registered (:func:`register_protocol`, :data:`PROTOCOLS`); a new class-split protocol is
one registered ``splits(n_classes, n_splits)`` function, which :func:`evaluate_protocol`, the
evaluation runner and ``zsar eval --protocol`` then offer.
* **E2E training-class removal** (Brattoli et al. 2020): a training class is removed when the cosine
  distance between its L2-normalised label embedding and that of ANY target class (the union of the
  target datasets) is ``< 0.05``.

A *predictor* is any callable ``predictor(class_names) -> scores`` giving, for every test video, one
score per candidate class (``(N, C)``, higher is better), or the predicted candidate index per video
(``(N,)``; then only top-1 and mean class accuracy are reported). :func:`transfer_predictor` (ResT:
semantic transfer + nearest composite prototype) and :func:`embedding_predictor` (nearest class
embedding, e.g. MZST) build predictors from precomputed representations.

    results = evaluate_protocol(transfer_predictor(x, seen_protos, seen_emb, target_emb, target_names,
                                                   k=5, theta=0.5, rho=3),
                                labels, target_names, protocol="0/50", dataset="ucf101")
    print(format_results_table(results))
    write_results_json("ucf101_0-50.json", results)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._registry import Registry
from .._utils import as_numpy, write_atomic
from ..zeroshot import composite_prototypes, cosine_similarity_matrix, transfer_assignment
from .metrics import mean_class_accuracy, top_k_accuracy

__all__ = [
    "PROTOCOLS",
    "ZeroShotProtocol",
    "get_protocol",
    "register_protocol",
    "E2E_REMOVAL_THRESHOLD",
    "half_class_splits",
    "evaluate_protocol",
    "transfer_predictor",
    "embedding_predictor",
    "ClassRemoval",
    "remove_overlapping_classes",
    "write_results_json",
    "format_results_table",
]

E2E_REMOVAL_THRESHOLD = 0.05
_METRICS = ("top1", "top5", "mean_class_accuracy")


def half_class_splits(n_classes: int, n_splits: int = 10) -> list[np.ndarray]:
    """The 0/50 class splits: split ``i`` holds ``n_classes // 2`` classes drawn with seed ``i``.

    Returns
    -------
    list of numpy.ndarray of int64
        Sorted class indices per split (the other half is the complement).
    """
    for name, value, low in (("n_classes", n_classes, 2), ("n_splits", n_splits, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    half = n_classes // 2  # E2E: 50 of UCF101's classes, 25 of HMDB51's
    return [np.sort(np.random.default_rng(i).permutation(n_classes)[:half]) for i in range(n_splits)]


@dataclass(frozen=True)
class ZeroShotProtocol:
    """A zero-shot protocol over a target dataset's classes: which classes are the candidates of
    each evaluation split (every class is unseen; the model never trained on any of them).

    Attributes:
        name: the registry name (``--protocol`` of ``zsar eval``).
        splits: ``splits(n_classes, n_splits) -> [sorted class indices per split]``.
        description: one line for help texts and reports.
    """

    name: str
    splits: Callable[[int, int], list[np.ndarray]]
    description: str = ""

    def candidates(self, n_classes: int) -> int:
        """How many classes each split offers (chance top-1 is its inverse)."""
        return len(self.splits(n_classes, 1)[0])


#: The registered protocols by name (add one with :func:`register_protocol`).
PROTOCOLS: Registry[ZeroShotProtocol] = Registry("protocol", "protocol")


def register_protocol(name: str, description: str = ""):
    """Decorator: registers ``splits(n_classes, n_splits) -> [class indices per split]`` as the
    protocol ``name``; :func:`evaluate_protocol`, :func:`zsar.eval.runner.zero_shot_report` and
    ``zsar eval --protocol`` then offer it.

    Raises:
        ValueError: ``name`` is empty or already registered (``PROTOCOLS.unregister(name)`` first to
            replace it).
    """

    def register(splits: Callable[[int, int], list[np.ndarray]]):
        PROTOCOLS.register(name, ZeroShotProtocol(name, splits, description))
        return splits

    return register


def get_protocol(name: str) -> ZeroShotProtocol:
    """The registered protocol ``name``; ``ValueError`` listing the names otherwise."""
    return PROTOCOLS.get(name)


@register_protocol("0/50", "E2E's (Brattoli et al. 2020; ResT Table 2): 10 random splits of half the "
                           "classes, mean and std")
def _half_splits(n_classes: int, n_splits: int) -> list[np.ndarray]:
    return half_class_splits(n_classes, n_splits)


@register_protocol("0/100", "every class of the dataset a candidate, one split (E2E; ResT Table 2)")
def _all_classes(n_classes: int, n_splits: int) -> list[np.ndarray]:
    return [np.arange(n_classes)]


def _mean_std(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def evaluate_protocol(
    predictor: Callable[[list[str]], object],
    labels,
    class_names: Sequence[str],
    protocol: str = "0/50",
    n_splits: int = 10,
    dataset: str | None = None,
) -> dict:
    """Evaluate a zero-shot predictor under the 0/50 or 0/100 protocol.

    Args:
        predictor: ``predictor(candidate_names) -> scores`` for ALL test videos: ``(N, C)`` scores,
            or ``(N,)`` predicted indices into ``candidate_names``. Rows of videos outside the split
            are ignored.
        labels: ``(N,)`` true class of each test video, as an index into ``class_names``.
        class_names: every class of the target dataset (distinct).
        protocol: ``"0/50"`` or ``"0/100"``.
        n_splits: number of 0/50 splits (ignored for 0/100).
        dataset: optional name recorded in the results.

    Returns:
        ``protocol``, ``dataset``, ``n_classes``, ``n_videos``, ``splits`` (per split: ``split``
        (= seed), ``classes``, ``n_videos`` and the metrics) and, per metric, ``{"mean", "std"}``
        over the splits. Metrics: ``top1``, ``top5`` (only with scores and at least 5 candidates)
        and ``mean_class_accuracy``; all fractions in [0, 1].

    Raises:
        ValueError: unknown protocol, repeated class names, labels that are not indices into
            ``class_names``, a split without test videos, or predictions of the wrong shape.
    """
    chosen = get_protocol(protocol)
    names = [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise ValueError("class_names must be distinct")
    y = as_numpy(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty (N,) array of class indices, got shape {y.shape}, dtype {y.dtype}")
    if y.min() < 0 or y.max() >= len(names):
        raise ValueError(f"labels must be in [0, {len(names)}) (indices into class_names), got [{y.min()}, {y.max()}]")

    splits = chosen.splits(len(names), n_splits)
    per_split = []
    for i, classes in enumerate(splits):
        candidates = [names[c] for c in classes]
        position = np.full(len(names), -1)
        position[classes] = np.arange(classes.size)
        rows = np.flatnonzero(position[y] >= 0)
        if rows.size == 0:
            raise ValueError(f"split {i}: no test video belongs to its {classes.size} classes")
        out = as_numpy(predictor(candidates))
        target = position[y[rows]]
        entry = {"split": i, "classes": candidates, "n_videos": int(rows.size)}
        if out.ndim == 2:
            if out.shape != (y.size, classes.size):
                raise ValueError(
                    f"split {i}: predictor returned scores of shape {out.shape}, expected "
                    f"({y.size}, {classes.size}) (all test videos × candidate classes)"
                )
            scores = out[rows]
            entry["top1"] = top_k_accuracy(target, scores, 1)
            if classes.size >= 5:
                entry["top5"] = top_k_accuracy(target, scores, 5)
            # Same tie rule as top_k_accuracy: the first maximal score wins.
            pred = scores.argmax(axis=1)
        elif out.ndim == 1:
            if out.shape != (y.size,):
                raise ValueError(f"split {i}: predictor returned {out.shape[0]} predictions for {y.size} test videos")
            pred = out[rows]
            if not np.issubdtype(pred.dtype, np.integer) or pred.min() < 0 or pred.max() >= classes.size:
                raise ValueError(f"split {i}: predictions must be candidate indices in [0, {classes.size})")
            entry["top1"] = float(np.mean(pred == target))
        else:
            raise ValueError(f"split {i}: predictor must return (N, C) scores or (N,) indices, got shape {out.shape}")
        entry["mean_class_accuracy"] = mean_class_accuracy(target, pred)
        per_split.append(entry)

    results = {
        "protocol": protocol,
        "dataset": dataset,
        "n_classes": len(names),
        "n_videos": int(y.size),
        "n_splits": len(splits),
        "splits": per_split,
    }
    for metric in _METRICS:
        if all(metric in s for s in per_split):
            results[metric] = _mean_std([s[metric] for s in per_split])
    return results


def _class_lookup(class_names: Sequence[str], n_rows: int, what: str) -> dict[str, int]:
    names = [str(n) for n in class_names]
    if len(names) != n_rows:
        raise ValueError(f"{what} has {n_rows} rows but class_names has {len(names)} names")
    if len(set(names)) != len(names):
        raise ValueError("class_names must be distinct")
    return {n: i for i, n in enumerate(names)}


def _rows_of(lookup: dict[str, int], candidates: Sequence[str]) -> np.ndarray:
    unknown = [c for c in candidates if c not in lookup]
    if unknown:
        raise KeyError(f"candidate classes not in class_names: {unknown[:5]}")
    return np.array([lookup[c] for c in candidates], dtype=np.int64)


def transfer_predictor(
    features,
    seen_prototypes,
    seen_embeddings,
    class_embeddings,
    class_names: Sequence[str],
    k: int,
    theta: float,
    rho: int,
) -> Callable[[list[str]], np.ndarray]:
    """A ResT predictor: semantic transfer to the candidate classes, cosine to composite prototypes.

    The transfer program is solved per candidate set, because its relative-distance constraint
    depends on which other classes are candidates (Eq. 3).

    Args:
        features: ``(N, D)`` visual representations of the test videos.
        seen_prototypes: ``(S, D)`` seen-class visual prototypes.
        seen_embeddings: ``(S, E)`` seen label embeddings.
        class_embeddings: ``(C, E)`` label embeddings of every target class, rows matching
            ``class_names``.
        class_names: the target classes.
        k: K nearest seen labels of the transfer program (see
            :func:`zsar.zeroshot.select_transfer_params`).
        theta: its relative-distance threshold.
        rho: its edges per target label.

    Returns:
        ``predictor(candidate_names) -> (N, len(candidate_names))`` cosine similarities.

    Raises:
        ValueError: shapes that do not match, or ``class_names`` not distinct or not one per row of
            ``class_embeddings``.
    """
    x = as_numpy(features).astype(np.float64, copy=False)
    protos = as_numpy(seen_prototypes).astype(np.float64, copy=False)
    seen = as_numpy(seen_embeddings).astype(np.float64, copy=False)
    target = as_numpy(class_embeddings).astype(np.float64, copy=False)
    if x.ndim != 2 or protos.ndim != 2 or x.shape[1] != protos.shape[1]:
        raise ValueError(f"features (N, D) and seen_prototypes (S, D) must share D, got {x.shape} and {protos.shape}")
    if seen.ndim != 2 or seen.shape[0] != protos.shape[0]:
        raise ValueError(f"seen_embeddings must have one row per seen prototype ({protos.shape[0]}), got {seen.shape}")
    if target.ndim != 2 or target.shape[1] != seen.shape[1]:
        raise ValueError(f"class_embeddings must be (C, {seen.shape[1]}) like seen_embeddings, got {target.shape}")
    lookup = _class_lookup(class_names, target.shape[0], "class_embeddings")

    def predict(candidates: list[str]) -> np.ndarray:
        m = cosine_similarity_matrix(target[_rows_of(lookup, candidates)], seen)
        a = transfer_assignment(m, k, theta, rho)
        return cosine_similarity_matrix(x, composite_prototypes(protos, m, a))

    return predict


def embedding_predictor(projected, class_embeddings, class_names: Sequence[str]) -> Callable[[list[str]], np.ndarray]:
    """A predictor scoring videos by cosine similarity of their projections to class embeddings.

    ``projected`` is ``(N, E)`` (e.g. MZST's semantic head output, or any video embedding in the
    label space); ``class_embeddings`` ``(C, E)`` with rows matching ``class_names``.
    """
    x = as_numpy(projected).astype(np.float64, copy=False)
    emb = as_numpy(class_embeddings).astype(np.float64, copy=False)
    if x.ndim != 2 or emb.ndim != 2 or x.shape[1] != emb.shape[1]:
        raise ValueError(f"projected (N, E) and class_embeddings (C, E) must share E, got {x.shape} and {emb.shape}")
    lookup = _class_lookup(class_names, emb.shape[0], "class_embeddings")

    def predict(candidates: list[str]) -> np.ndarray:
        return cosine_similarity_matrix(x, emb[_rows_of(lookup, candidates)])

    return predict


@dataclass(frozen=True)
class ClassRemoval:
    """Result of :func:`remove_overlapping_classes`.

    ``kept``: training classes kept, in input order. ``removed``: one dict per removed class with
    ``name``, ``nearest`` (the closest target class) and ``distance`` (its cosine distance).
    """

    kept: list[str]
    removed: list[dict]
    threshold: float


def remove_overlapping_classes(
    train_classes: Sequence[str],
    target_classes: Sequence[str],
    embedder=None,
    *,
    train_embeddings=None,
    target_embeddings=None,
    threshold: float = E2E_REMOVAL_THRESHOLD,
) -> ClassRemoval:
    """E2E training-class removal: drop training classes too close to any target class.

    A training class is removed iff ``1 − cos(ξ_train, ξ_target) < threshold`` for at least one
    target class (strictly less: a class exactly at the threshold is kept). Embeddings come from
    ``embedder.embed(names)`` (e.g. :class:`zsar.text.WordVectorEmbedder` over word2vec, as in E2E)
    or are passed precomputed; cosine normalises them, which is the "L2-normalised" of the protocol.

    Args:
        train_classes: e.g. ``zsar.resources.class_list("kinetics700")``.
        target_classes: the union of the target datasets' classes, e.g.
            ``class_list("ucf101") + class_list("hmdb51")``.
        embedder: optional object with ``embed(list[str]) -> (n, E)``.
        train_embeddings: ``(n, E)`` embeddings of ``train_classes``, instead of ``embedder``.
        target_embeddings: ``(n, E)`` embeddings of ``target_classes``, with ``train_embeddings``.
        threshold: cosine-distance threshold (E2E: 0.05).

    Returns:
        A :class:`ClassRemoval`: the classes kept and removed, each removal with its closest target
        class and distance.

    Raises:
        ValueError: empty class lists, a non-finite threshold, only one of the embedding matrices,
            neither an embedder nor embeddings, or embeddings of the wrong shape.
    """
    train, target = [str(c) for c in train_classes], [str(c) for c in target_classes]
    if not train or not target:
        raise ValueError("train_classes and target_classes must be non-empty")
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if (train_embeddings is None) != (target_embeddings is None):
        raise ValueError("pass both train_embeddings and target_embeddings, or neither")
    if train_embeddings is None:
        if embedder is None:
            raise ValueError("pass an embedder, or train_embeddings and target_embeddings")
        train_embeddings, target_embeddings = embedder.embed(train), embedder.embed(target)
    a = as_numpy(train_embeddings).astype(np.float64, copy=False)
    b = as_numpy(target_embeddings).astype(np.float64, copy=False)
    if a.ndim != 2 or a.shape[0] != len(train):
        raise ValueError(f"train_embeddings must have shape ({len(train)}, E), got {a.shape}")
    if b.ndim != 2 or b.shape[0] != len(target):
        raise ValueError(f"target_embeddings must have shape ({len(target)}, E), got {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("label embeddings contain NaN or inf")
    distance = 1.0 - cosine_similarity_matrix(a, b)
    nearest = distance.argmin(axis=1)
    nearest_distance = distance[np.arange(len(train)), nearest]
    kept, removed = [], []
    for i, name in enumerate(train):
        if nearest_distance[i] < threshold:
            removed.append({"name": name, "nearest": target[nearest[i]], "distance": float(nearest_distance[i])})
        else:
            kept.append(name)
    return ClassRemoval(kept, removed, threshold)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_results_json(path, results) -> Path:
    """Write protocol results (a dict, or a list of them) as indented JSON; returns the path.

    Written to a temporary file beside ``path`` and renamed over it, so a failure (a full disk, a
    kill) leaves the earlier report as it was."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a report file")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(_jsonable(results), indent=2) + "\n")
    return path


def format_results_table(results) -> str:
    """A text table of protocol results (a dict or a list of dicts): mean ± std in percent."""
    rows = [results] if isinstance(results, dict) else list(results)
    present = [m for m in _METRICS if any(m in r for r in rows)]
    header = ["dataset", "protocol", "splits"] + present
    body = []
    for r in rows:
        cells = [str(r.get("dataset") or "-"), r["protocol"], str(r["n_splits"])]
        for m in present:
            cells.append(f"{100 * r[m]['mean']:.1f} ± {100 * r[m]['std']:.1f}" if m in r else "-")
        body.append(cells)
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(c) for c in body])
