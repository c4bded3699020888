"""MZSL-50 semantic relatedness and scoring, and the E2E class removal for MZST's pretraining.

From the MZST paper ("A Multimodal Benchmark and Improved Architecture for Zero Shot Learning", §3):

* ``SR(class) = min over reference classes r of D_cos(φ(class), φ(r))``, the cosine distance
  ``1 − cos`` of label embeddings; the reference classes are those of the benchmark training sets
  (Kinetics-400/600/700, VGGSound, UCF101, ActivityNet: :func:`default_reference_classes`).
* Buckets: easy ``0.1 < SR <= 0.33``, medium ``0.33 < SR <= 0.66``, hard ``0.66 < SR <= 0.8``;
  anything else is out of range (near-identical to a reference class, or unrelated to all).
* Score: the per-bucket mean class accuracies averaged with the bucket's class count as weight,
  i.e. the mean accuracy over the in-range classes.

The paper embeds labels with word2vec (:class:`zsar.text.WordVectorEmbedder`); any embedder with
``embed(list[str]) -> (n, E)`` works, but the bucket limits were set for word2vec.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .._utils import as_numpy
from ..resources import avca_split, class_list
from ..zeroshot import cosine_similarity_matrix
from .protocols import E2E_REMOVAL_THRESHOLD, ClassRemoval, remove_overlapping_classes

__all__ = [
    "MZSL50_BUCKETS",
    "OUT_OF_RANGE",
    "REFERENCE_DATASETS",
    "MZST_TARGET_DATASETS",
    "default_reference_classes",
    "semantic_relatedness",
    "relatedness_buckets",
    "bucket_counts",
    "class_relatedness",
    "mzsl50_score",
    "mzst_class_removal",
    "format_class_removal",
]

#: Bucket -> (lower, upper]: SR strictly above ``lower`` and at most ``upper``.
MZSL50_BUCKETS = {"easy": (0.1, 0.33), "medium": (0.33, 0.66), "hard": (0.66, 0.8)}
OUT_OF_RANGE = "out_of_range"
#: The benchmark training sets whose classes make the default SR reference set.
REFERENCE_DATASETS = ("kinetics400", "kinetics600", "kinetics700", "vggsound", "ucf101", "activitynet200")
#: The MZST benchmarks (UCF-GZSL, ActivityNet-GZSL, VGGSound-GZSL): the targets that its Kinetics
#: pretraining classes must not overlap.
MZST_TARGET_DATASETS = ("ucf101", "activitynet200", "vggsound")


def _dataset_classes(name: str) -> list[str]:
    # VGGSound has no list of its own among the packaged classes; the AVCA split ships all 309.
    return avca_split("vggsound", "all") if name.lower() == "vggsound" else class_list(name)


def default_reference_classes(datasets: Sequence[str] = REFERENCE_DATASETS) -> list[str]:
    """The union of the packaged class lists of ``datasets`` (first spelling kept, file order).

    Args:
        datasets: names accepted by :func:`zsar.resources.class_list`, or ``vggsound``. Default: the
            MZSL-50 reference set (Kinetics-400/600/700, VGGSound, UCF101, ActivityNet).

    Returns:
        Distinct class names.
    """
    return list(dict.fromkeys(c for name in datasets for c in _dataset_classes(name)))


def semantic_relatedness(targets, references=None, embedder=None) -> np.ndarray:
    """SR of each target class: its minimum cosine distance to the reference classes.

    Args:
        targets: ``(T, E)`` label embeddings (rows are classes), or, with ``embedder``, T class names.
        references: ``(R, E)`` label embeddings, or, with ``embedder``, class names (default:
            :func:`default_reference_classes`).
        embedder: anything with ``embed(list[str]) -> (n, E)``; when given, ``targets`` and
            ``references`` are names.

    Returns:
        ``(T,)`` float64 SR values in [0, 2].

    Raises:
        ValueError: shapes, empty inputs, NaN/inf embeddings, or names without an ``embedder``.
    """
    t, r = _embeddings(targets, references, embedder)
    return _distances(t, r).min(axis=1)


def _embeddings(targets, references, embedder) -> tuple[np.ndarray, np.ndarray]:
    if embedder is not None:
        names = _names("targets", targets)
        refs = default_reference_classes() if references is None else _names("references", references)
        targets, references = embedder.embed(names), embedder.embed(refs)
    elif references is None:
        raise ValueError("references: pass the reference embeddings, or an embedder to embed class names")
    t = np.asarray(as_numpy(targets), dtype=np.float64)
    r = np.asarray(as_numpy(references), dtype=np.float64)
    if t.ndim != 2 or r.ndim != 2 or t.shape[1] != r.shape[1] or not t.size or not r.size:
        raise ValueError(f"targets (T, E) and references (R, E) must be non-empty and share E, got {t.shape} and {r.shape}")
    if not (np.isfinite(t).all() and np.isfinite(r).all()):
        raise ValueError("label embeddings contain NaN or inf")
    return t, r


def _names(what: str, names) -> list[str]:
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what}: with an embedder, pass a list of class names")
    names = list(names)
    if not names:
        raise ValueError(f"{what}: no class names")
    return names


def _distances(t: np.ndarray, r: np.ndarray) -> np.ndarray:
    return 1.0 - cosine_similarity_matrix(t, r)


def relatedness_buckets(sr) -> list[str]:
    """The MZSL-50 bucket of each SR value: ``easy``, ``medium``, ``hard`` or ``out_of_range``."""
    values = np.asarray(as_numpy(sr), dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"sr must be 1-D, got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("sr contains NaN")
    out = []
    for v in values:
        out.append(next((b for b, (lo, hi) in MZSL50_BUCKETS.items() if lo < v <= hi), OUT_OF_RANGE))
    return out


def bucket_counts(sr) -> dict[str, int]:
    """Classes per MZSL-50 bucket (``easy``, ``medium``, ``hard``, ``out_of_range``) of SR values."""
    buckets = relatedness_buckets(sr)
    return {b: buckets.count(b) for b in (*MZSL50_BUCKETS, OUT_OF_RANGE)}


def class_relatedness(classes: Sequence[str], embedder, references: Sequence[str] | None = None) -> list[dict]:
    """SR, nearest reference class and bucket of each class name.

    Args:
        classes: target class names (e.g. the 50 classes of MZSL-50).
        embedder: anything with ``embed(list[str]) -> (n, E)``.
        references: reference class names (default :func:`default_reference_classes`).

    Returns:
        One dict per class, in input order: ``class``, ``sr``, ``nearest`` (the reference class at
        that distance, the first in reference order on ties) and ``bucket``.
    """
    refs = default_reference_classes() if references is None else _names("references", references)
    t, r = _embeddings(list(classes), refs, embedder)
    d = _distances(t, r)
    nearest = d.argmin(axis=1)
    sr = d[np.arange(len(d)), nearest]
    return [{"class": c, "sr": float(v), "nearest": refs[j], "bucket": b}
            for c, v, j, b in zip(classes, sr, nearest, relatedness_buckets(sr))]


def mzsl50_score(per_class_accuracy, sr) -> dict:
    """The MZSL-50 score: per-bucket mean class accuracies and their class-count-weighted mean.

    Args:
        per_class_accuracy: ``(T,)`` accuracy (recall, a fraction) of each target class.
        sr: ``(T,)`` SR of each target class (:func:`semantic_relatedness`), aligned with it.

    Returns:
        ``{"easy", "medium", "hard"}``: the mean accuracy of the classes in each bucket (NaN when it
        has none); ``counts``: classes per bucket, ``out_of_range`` included; ``score``: the
        per-bucket means weighted by their counts (NaN when no class is in range), as the paper's
        text defines it; ``bucket_mean``: the unweighted mean of the non-empty buckets' means, which
        is what the "Avg" column of the paper's Table 3 holds (e.g. MZST on VGG-Sound:
        (46.74 + 24.98 + 8.82) / 3 = 26.85 ≈ 26.84, where the count weights 9/31/10 give 25.66).
        Out-of-range classes take no part in either.

    Raises:
        ValueError: shapes differ, NaN inputs, or accuracies outside [0, 1].
    """
    acc = np.asarray(as_numpy(per_class_accuracy), dtype=np.float64)
    buckets = relatedness_buckets(sr)
    if acc.shape != (len(buckets),):
        raise ValueError(f"per_class_accuracy must have shape ({len(buckets)},) like sr, got {acc.shape}")
    if np.isnan(acc).any() or (acc < 0).any() or (acc > 1).any():
        raise ValueError("per_class_accuracy must be fractions in [0, 1] (no NaN)")
    labels = np.array(buckets)
    result: dict = {}
    total, weight = 0.0, 0
    for b in MZSL50_BUCKETS:
        members = acc[labels == b]
        result[b] = float(members.mean()) if members.size else math.nan
        if members.size:
            total += members.size * result[b]
            weight += members.size
    result["counts"] = {b: buckets.count(b) for b in (*MZSL50_BUCKETS, OUT_OF_RANGE)}
    result["score"] = total / weight if weight else math.nan
    present = [result[b] for b in MZSL50_BUCKETS if not math.isnan(result[b])]
    result["bucket_mean"] = float(np.mean(present)) if present else math.nan
    return result


def mzst_class_removal(
    embedder,
    train_classes: Sequence[str] | None = None,
    target_datasets: Sequence[str] = MZST_TARGET_DATASETS,
    threshold: float = E2E_REMOVAL_THRESHOLD,
    target_classes: Sequence[str] | None = None,
) -> ClassRemoval:
    """E2E-style removal of pretraining classes that overlap MZST's benchmarks.

    The MZST paper pretrains its video model on the Kinetics classes left after removing every
    class whose label embedding lies within cosine distance ``threshold`` (E2E: 0.05) of a target
    class (595 classes with the paper's embedder); this is :func:`remove_overlapping_classes` with
    those defaults.

    Args:
        embedder: anything with ``embed(list[str]) -> (n, E)`` (the paper: word2vec).
        train_classes: the pretraining classes (default: Kinetics-700).
        target_datasets: packaged class lists whose union is the target set (default: UCF101,
            ActivityNet-200, VGGSound); ignored when ``target_classes`` is given.
        threshold: cosine-distance threshold (a class is removed when strictly below it).
        target_classes: explicit target class names instead of ``target_datasets``.

    Returns:
        The :class:`ClassRemoval` (kept classes, removed ones with their nearest target class).
    """
    train = class_list("kinetics700") if train_classes is None else list(train_classes)
    targets = default_reference_classes(target_datasets) if target_classes is None else list(target_classes)
    return remove_overlapping_classes(train, targets, embedder, threshold=threshold)


def format_class_removal(removal: ClassRemoval) -> str:
    """A text report of a :class:`ClassRemoval`: counts, then each removed class with its nearest
    target class and distance."""
    n = len(removal.kept) + len(removal.removed)
    lines = [f"kept {len(removal.kept)} of {n} training classes; removed {len(removal.removed)} "
             f"(cosine distance < {removal.threshold:g} to a target class)"]
    width = max((len(r["name"]) for r in removal.removed), default=0)
    for r in sorted(removal.removed, key=lambda r: (r["distance"], r["name"])):
        lines.append(f"  {r['name']:<{width}}  ~ {r['nearest']}  ({r['distance']:.4f})")
    return "\n".join(lines)

