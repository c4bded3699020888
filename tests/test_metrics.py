"""Evaluation metrics against straightforward loop implementations and hand examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsar.eval.metrics import harmonic_mean, mean_class_accuracy, top_k_accuracy


def ref_top_k(y, scores, k) -> float:
    hits = 0
    for label, row in zip(y, scores):
        # Stable descending sort: higher score first, lower class index first among equals.
        ranking = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += label in ranking[:k]
    return hits / len(y)


def ref_mean_class_accuracy(y, p) -> float:
    recalls = []
    for c in set(y):
        idx = [n for n, label in enumerate(y) if label == c]
        recalls.append(sum(p[n] == c for n in idx) / len(idx))
    return sum(recalls) / len(recalls)


def test_top_k_matches_loops(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        n, c = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        # Rounded scores make ties common, so the tie rule is exercised.
        scores = np.round(rng.standard_normal((n, c)), 1)
        y = rng.integers(0, c, n)
        k = int(rng.integers(1, c + 1))
        expected = ref_top_k(y.tolist(), scores.tolist(), k)
        assert top_k_accuracy(y, scores, k) == pytest.approx(expected, abs=1e-12)
        assert top_k_accuracy(y.tolist(), scores.tolist(), k) == pytest.approx(expected, abs=1e-12)
        got = top_k_accuracy(torch.from_numpy(y), torch.from_numpy(scores).float(), k)
        assert isinstance(got, float) and got == pytest.approx(expected, abs=1e-12)


def test_top_k_hand_example_and_ties():
    scores = [[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]
    assert top_k_accuracy([1, 0, 1], scores, 1) == pytest.approx(2 / 3)  # tie goes to class 0
    assert top_k_accuracy([2, 1, 2], scores, 2) == pytest.approx(2 / 3)  # the tied class 1 ranks 2nd
    assert top_k_accuracy([2, 2, 2], scores, 3) == 1.0


@pytest.mark.parametrize(
    "y, scores, k, error, match",
    [
        ([0, 1], [[0.1, 0.2]], 1, ValueError, "samples"),
        ([0], [[0.1, 0.2]], 0, ValueError, "k must be in"),
        ([0], [[0.1, 0.2]], 3, ValueError, "k must be in"),
        ([0], [[0.1, 0.2]], 1.0, TypeError, "k must be an int"),
        ([2], [[0.1, 0.2]], 1, ValueError, "y_true values"),
        ([0.0], [[0.1, 0.2]], 1, TypeError, "integer"),
        ([], np.zeros((0, 2)), 1, ValueError, "empty"),
        ([0], [0.1, 0.2], 1, ValueError, "2-D"),
        ([0], [[np.nan, 0.2]], 1, ValueError, "NaN"),
    ],
)
def test_top_k_errors(y, scores, k, error, match):
    with pytest.raises(error, match=match):
        top_k_accuracy(y, scores, k)


def test_mean_class_accuracy_matches_loops(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        n, c = int(rng.integers(1, 60)), int(rng.integers(1, 8))
        y = rng.integers(0, c, n)
        p = np.where(rng.random(n) < 0.6, y, rng.integers(0, c + 2, n))  # some never-true predictions
        expected = ref_mean_class_accuracy(y.tolist(), p.tolist())
        assert mean_class_accuracy(y, p) == pytest.approx(expected, abs=1e-12)
        got = mean_class_accuracy(torch.from_numpy(y), torch.from_numpy(p))
        assert isinstance(got, float) and got == pytest.approx(expected, abs=1e-12)


def test_mean_class_accuracy_hand_example():
    # Class 0: 1/2, class 1: 2/2, class 5: 0/1; the predicted-only class 3 adds no term.
    assert mean_class_accuracy([0, 0, 1, 1, 5], [0, 3, 1, 1, 0]) == pytest.approx(0.5)
    assert mean_class_accuracy(["run", "jump", "jump"], ["run", "run", "jump"]) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "y, p, match",
    [([0, 1], [0], "samples"), ([], [], "empty"), ([[0, 1]], [[0, 1]], "1-D")],
)
def test_mean_class_accuracy_errors(y, p, match):
    with pytest.raises(ValueError, match=match):
        mean_class_accuracy(y, p)


def test_harmonic_mean():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(0.6, 0.2) == pytest.approx(2 * 0.6 * 0.2 / 0.8)
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert isinstance(harmonic_mean(torch.tensor(0.4), np.float32(0.8)), float)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="seen_acc"):
            harmonic_mean(bad, 0.5)
