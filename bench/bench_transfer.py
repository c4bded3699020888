"""Semantic-transfer program (ResT Eq. 1-5): HiGHS solve vs the separable closed form, side by side.

Sizes: 101 unseen × 664 seen (UCF101 0/100 vs the 664-class Kinetics subset) and 1,000 × 10,000.
Relatedness: cosine similarities of random 300-d "label embeddings" sharing a common direction, so
that, as with word2vec labels, most similarities are positive (about 0.3-0.5) and the relative-distance
constraint removes some KNN edges. K = 5, ρ = 3, ϑ = 0.9. Each call includes input validation, the
allowed-edge computation and, for HiGHS, model building and the solve. "highs capacity=1" adds the
coupling constraint (each seen class serves at most one unseen class), which HiGHS must solve jointly.

Targets: 101×664 < 50 ms, 1000×10000 < 2 s (HiGHS).
Run: ``pytest bench/bench_transfer.py --benchmark-only``; without ``--benchmark-only`` one round at
20 x 100 (see ``benchmode.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from benchmode import pick

from zsar.zeroshot import cosine_similarity_matrix, transfer_assignment, transfer_assignment_closed_form

K, RHO, THETA = 5, 3, 0.9
SIZES = pick([(101, 664), (1000, 10000)], [(20, 100)])


def _relatedness(n_unseen: int, n_seen: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    common = rng.standard_normal(300) * 0.8
    unseen = rng.standard_normal((n_unseen, 300)) + common
    seen = rng.standard_normal((n_seen, 300)) + common
    return cosine_similarity_matrix(unseen, seen)


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def relatedness(request):
    return _relatedness(*request.param)


def _group(m: np.ndarray) -> str:
    return f"transfer {m.shape[0]}x{m.shape[1]}"


def test_highs(record, relatedness):
    # Sanity (untimed): the separable HiGHS optimum equals the closed form's objective.
    a = transfer_assignment(relatedness, K, THETA, RHO)
    b = transfer_assignment_closed_form(relatedness, K, THETA, RHO)
    assert np.isclose((a * relatedness).sum(), (b * relatedness).sum())
    record(_group(relatedness), "highs", lambda: transfer_assignment(relatedness, K, THETA, RHO), ours=True)


def test_closed_form(record, relatedness):
    record(
        _group(relatedness), "closed form", lambda: transfer_assignment_closed_form(relatedness, K, THETA, RHO)
    )


def test_highs_capacity(record, relatedness):
    record(
        _group(relatedness),
        "highs capacity=1",
        lambda: transfer_assignment(relatedness, K, THETA, RHO, capacity=1),
    )
