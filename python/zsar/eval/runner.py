"""The one evaluation runner that ``zsar demo`` and ``zsar eval`` share: zero-shot accuracy of a
classifier on a dataset encoded once, next to the semantic-space baseline and chance.

    encoded = encode_loader(clf.model, loader, with_seen_logits=True)
    report = zero_shot_report(clf, encoded, class_names, protocol="0/100")
    print(format_zero_shot_report(report))

Metrics: top-1, top-5 (with at least 5 candidates) and mean class accuracy, fractions in [0, 1],
under the 0/100 protocol (every class a candidate) or 0/50 (10 random half-class splits; see
:func:`zsar.eval.evaluate_protocol`). The semantic-space baseline (ResT Table 3(b)) classifies the
video among the seen classes with the model's seen-class scores and ranks the candidates by the
relatedness of their label to that seen label.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..zeroshot.encoding import EncodedSet
from ..zeroshot.baselines import semantic_space_scores
from ..zeroshot.transfer import cosine_similarity_matrix
from .metrics import top_k_accuracy
from .protocols import evaluate_protocol, format_results_table, get_protocol

__all__ = ["zero_shot_report", "seen_accuracy", "format_zero_shot_report"]


def seen_accuracy(encoded: EncodedSet) -> float:
    """Top-1 of the model's seen-class scores on videos of the seen classes (labels index them)."""
    return top_k_accuracy(encoded.labels, encoded.seen_logits.numpy(), 1)


def zero_shot_report(clf, encoded: EncodedSet, class_names: Sequence[str], protocol: str = "0/100",
                     n_splits: int = 10, dataset: str | None = None) -> dict[str, Any]:
    """Zero-shot accuracy of ``clf`` and of the semantic-space baseline on an encoded dataset.

    Args:
        clf: a :class:`~zsar.zeroshot.ZeroShotClassifier` (its labels are set per split).
        encoded: the test videos (:func:`zsar.zeroshot.encode_loader` with ``clf.model`` and ``with_seen_logits=True``).
        class_names: the dataset's classes, which ``encoded.labels`` index; the candidates.
        protocol: a registered protocol (:data:`zsar.eval.PROTOCOLS`): ``"0/100"`` or ``"0/50"``
            (``n_splits`` half-class splits).
        dataset: a name recorded in the report.

    Returns:
        ``{"protocol", "videos", "classes", "transfer", "semantic_baseline", "chance",
        "chance_top5"}``; ``transfer`` and ``semantic_baseline`` are :func:`evaluate_protocol`
        results (``top1``/``top5``/``mean_class_accuracy`` as ``{"mean", "std"}``).
    """
    names = [str(c) for c in class_names]
    x = encoded.x

    def transfer(candidates: list[str]) -> np.ndarray:
        clf.set_labels(candidates)
        return clf.scores(x).double().numpy()

    seen_pred = encoded.seen_logits.numpy().argmax(1)
    seen_embeddings = clf.embedder.embed(clf.seen_labels)

    def baseline(candidates: list[str]) -> np.ndarray:
        relatedness = cosine_similarity_matrix(clf.embedder.embed(candidates), seen_embeddings)
        return semantic_space_scores(seen_pred, relatedness)

    n_candidates = get_protocol(protocol).candidates(len(names))
    return {
        "protocol": protocol,
        "dataset": dataset,
        "videos": int(len(encoded.labels)),
        "skipped_videos": int(encoded.skipped),
        "classes": len(names),
        "transfer": evaluate_protocol(transfer, encoded.labels, names, protocol=protocol, n_splits=n_splits,
                                      dataset=dataset),
        "semantic_baseline": evaluate_protocol(baseline, encoded.labels, names, protocol=protocol,
                                               n_splits=n_splits, dataset=dataset),
        "chance": 1.0 / max(n_candidates, 1),
        "chance_top5": min(5, n_candidates) / max(n_candidates, 1),
    }


def format_zero_shot_report(report: dict[str, Any]) -> str:
    """The tables of a :func:`zero_shot_report` (zero-shot classifier, semantic-space baseline, chance)."""
    lines = []
    for key, title in (("transfer", "zero-shot classifier"), ("semantic_baseline", "semantic-space baseline")):
        lines += [f"== {title} ==", format_results_table(report[key])]
    lines.append(f"chance top-1: {report['chance']:.4f}")
    return "\n".join(lines)
