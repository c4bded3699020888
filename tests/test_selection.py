"""Tests of the semantic-space baseline and the cross-validated choice of (ϑ, K, ρ)."""

import numpy as np
import pytest
import torch

from zsar.zeroshot import semantic_space_baseline


def _random_relatedness(rng, n_unseen, n_seen):
    m = rng.uniform(-1, 1, size=(n_unseen, n_seen))
    return m


def test_semantic_space_baseline_matches_loop(seed):
    rng = np.random.default_rng(seed)
    m = _random_relatedness(rng, 7, 11)
    pred = rng.integers(0, 11, size=40)
    out = semantic_space_baseline(pred, m)
    expected = [max(range(7), key=lambda j: (m[j, i], -j)) for i in pred]
    assert out.dtype == np.int64 and out.shape == (40,)
    assert out.tolist() == expected


def test_semantic_space_baseline_scores_and_ties(seed):
    rng = np.random.default_rng(seed)
    # Unseen rows 1 and 3 tie on every seen class: the lower index (1) must win.
    m = np.full((4, 3), -0.5)
    m[1] = m[3] = [0.9, 0.2, 0.1]
    m[2, 1] = 0.95
    scores = rng.normal(size=(6, 3))
    seen = scores.argmax(axis=1)
    expected = np.array([1, 2, 1])[seen]
    assert semantic_space_baseline(scores, m).tolist() == expected.tolist()
    assert semantic_space_baseline(torch.as_tensor(scores), torch.as_tensor(m)).tolist() == expected.tolist()
    assert semantic_space_baseline(seen, m).tolist() == expected.tolist()


def test_semantic_space_baseline_errors():
    m = np.eye(3)
    with pytest.raises(ValueError, match="relatedness"):
        semantic_space_baseline([0], np.array([[np.nan, 0.1]]))
    with pytest.raises(ValueError, match="relatedness"):
        semantic_space_baseline([0], np.ones(3))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        semantic_space_baseline(np.zeros((2, 4)), m)
    with pytest.raises(ValueError, match="NaN"):
        semantic_space_baseline(np.array([[0.0, np.nan, 1.0]]), m)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        semantic_space_baseline([0, 3], m)
    with pytest.raises(TypeError, match="integer"):
        semantic_space_baseline([0.0, 1.0], m)
    with pytest.raises(ValueError, match="shape"):
        semantic_space_baseline(np.zeros((1, 3, 1)), m)
