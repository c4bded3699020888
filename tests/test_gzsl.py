"""GZSL metrics with calibrated stacking: hand-computed cases and an independent loop implementation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from zsar.eval import (
    DEFAULT_BETA_GRID,
    calibrate_beta,
    class_distances,
    gzsl_curve,
    gzsl_per_class_accuracy,
    gzsl_scores,
    harmonic_mean,
    mean_class_accuracy,
    per_class_accuracy,
)


# ------------------------------------------------------------ independent reference (plain loops)

def ref_predict(row, candidates, bonus):
    best, best_value = None, math.inf
    for c in sorted(candidates):  # ascending, strict "<": ties go to the lowest class index
        value = row[c] + bonus.get(c, 0.0)
        if best is None or value < best_value:
            best, best_value = c, value
    return best


def ref_mca(pairs):
    # Exact fractions: the protocol's ties (equal HM at two betas) are ties of counts, not of how a
    # sum of rounded recalls happens to round.
    classes = sorted({y for y, _ in pairs})
    recalls = []
    for c in classes:
        mine = [p for y, p in pairs if y == c]
        recalls.append(Fraction(sum(p == c for p in mine), len(mine)))
    return sum(recalls) / len(recalls)


def ref_scores(dist, labels, seen, unseen, beta, exact=False):
    dist, labels = np.asarray(dist).tolist(), np.asarray(labels).tolist()
    space = set(seen) | set(unseen)
    bonus = {c: beta for c in seen}
    seen_pairs, unseen_pairs, zsl_pairs = [], [], []
    for row, y in zip(dist, labels):
        p = ref_predict(row, space, bonus)
        (seen_pairs if y in seen else unseen_pairs).append((y, p))
        if y in unseen:
            zsl_pairs.append((y, ref_predict(row, unseen, {})))
    s, u = ref_mca(seen_pairs), ref_mca(unseen_pairs)
    hm = 0 if s + u == 0 else 2 * s * u / (s + u)
    scores = {"S": s, "U": u, "HM": hm, "ZSL": ref_mca(zsl_pairs)}
    return scores if exact else {k: float(v) for k, v in scores.items()}


def ref_calibrate(dist, labels, seen, unseen, grid):
    best_beta, best_hm = None, -1.0
    for beta in grid:
        hm = ref_scores(dist, labels, seen, unseen, beta, exact=True)["HM"]
        if hm > best_hm or (hm == best_hm and beta < best_beta):
            best_beta, best_hm = beta, hm
    return best_beta


def random_split(rng, n=None, c=None):
    """Random distances with non-contiguous seen/unseen sets and classes outside the split."""
    c = c or int(rng.integers(4, 14))
    order = rng.permutation(c)
    n_seen = int(rng.integers(1, c - 2))
    n_unseen = int(rng.integers(1, c - n_seen))
    seen, unseen = sorted(order[:n_seen].tolist()), sorted(order[n_seen:n_seen + n_unseen].tolist())
    n = n or int(rng.integers(10, 80))
    labels = rng.choice(seen + unseen, size=n)
    labels[0], labels[1] = seen[0], unseen[0]  # both groups present
    x = rng.normal(size=(n, 5))
    emb = rng.normal(size=(c, 5))
    dist = np.sqrt(((x[:, None] - emb[None]) ** 2).sum(-1))
    return dist, labels, seen, unseen


# ------------------------------------------------------------ hand-computed cases

def test_hand_computed_scores_and_calibration():
    # Classes: 0, 1 seen; 2, 3 unseen; 4 outside the split (always closest, never allowed to win).
    dist = np.array([
        [1.0, 2.0, 1.5, 3.0, 0.0],  # y=0: GZSL 0 (beta < 0.5), 2 (beta > 0.5)
        [2.0, 1.0, 3.0, 1.1, 0.0],  # y=1: GZSL 1 (beta < 0.1), 3 (beta > 0.1)
        [1.0, 3.0, 1.3, 2.0, 0.0],  # y=2: GZSL 0 (beta < 0.3), 2 (beta > 0.3); ZSL 2
        [2.0, 2.5, 3.0, 2.9, 0.0],  # y=3: GZSL 0 (beta < 0.9), 3 (beta > 0.9); ZSL 3
        [0.5, 3.0, 0.8, 0.9, 0.0],  # y=3: GZSL 0 (beta < 0.3), 2 (beta > 0.3); ZSL 2 (wrong)
    ])
    labels = np.array([0, 1, 2, 3, 3])
    seen, unseen = [0, 1], [2, 3]
    r0 = gzsl_scores(dist, labels, seen, unseen)
    # beta 0: predictions 0, 1, 0, 0, 0 -> S = (1 + 1) / 2, U = (0 + 0) / 2; ZSL: 2 right, 3 half.
    assert r0 == {"S": 1.0, "U": 0.0, "HM": 0.0, "ZSL": pytest.approx(0.75)}
    r = gzsl_scores(dist, labels, seen, unseen, beta=0.45)
    # beta 0.45: predictions 0, 3, 2, 0, 2 -> S = (1 + 0) / 2, U = (1 + 0) / 2, HM = 0.5.
    assert r == {"S": 0.5, "U": 0.5, "HM": 0.5, "ZSL": pytest.approx(0.75)}
    r = gzsl_scores(dist, labels, seen, unseen, beta=1.0)
    # beta 1: predictions 2, 3, 2, 3, 2 -> S = 0, U = (1 + 1/2) / 2.
    assert r == {"S": 0.0, "U": 0.75, "HM": 0.0, "ZSL": pytest.approx(0.75)}
    # The default grid steps by 0.2 (no grid beta sits on a switch point): 0.2 predicts 0, 3, 0, 0, 0
    # (HM 0), 0.4 predicts 0, 3, 2, 0, 2 (HM 0.5), 0.6 and above predict class 2 for sample 0 (S = 0).
    assert calibrate_beta(dist, labels, seen, unseen) == pytest.approx(0.4)
    assert gzsl_scores(dist, labels, seen, unseen, 0.4)["HM"] == 0.5
    assert calibrate_beta(dist, labels, seen, unseen, grid=[0.45, 0.4, 1.0]) == 0.4  # tie: the smaller
    assert calibrate_beta(dist, labels, seen, unseen, grid=[1.0, 0.45, 0.0]) == 0.45


def test_argmin_ties_go_to_the_lowest_class_index():
    dist = np.array([[1.0, 1.0, 1.0, 1.0]])
    # Seen 2 and unseen 1 tie at beta 0: class 1 wins (lower index) although 2 is listed first.
    assert gzsl_scores(dist, [1], seen=[2, 3], unseen=[1], beta=0.0)["U"] == 1.0
    assert gzsl_scores(dist, [2], seen=[3, 2], unseen=[1, 0], beta=0.0)["S"] == 0.0
    # With beta the unseen classes win; among them the lowest index.
    r = gzsl_scores(np.ones((2, 4)), [0, 2], seen=[2], unseen=[1, 0], beta=0.1)
    assert r["U"] == 1.0 and r["S"] == 0.0


def test_calibration_ties_pick_the_smallest_beta():
    # Distances far apart: no beta of the grid changes a prediction, every HM is equal.
    dist = np.array([[0.0, 10.0], [10.0, 0.0]])
    assert calibrate_beta(dist, [0, 1], [0], [1]) == 0.0
    assert calibrate_beta(dist, [0, 1], [0], [1], grid=[2.0, 1.0, 3.0]) == 1.0
    curve = gzsl_curve(dist, [0, 1], [0], [1], grid=[2.0, 1.0, 3.0])
    assert curve["best"] == 1 and curve["HM"] == [1.0, 1.0, 1.0]


def test_tied_counts_tie_however_floats_would_round():
    # Classes 0-2 seen, 3-4 unseen. At beta 0: S = 1/2 (per-class recalls 1/3, 1/2, 2/3 of unequal
    # class sizes), U = 1/2; at beta 0.2 the same HM from other counts. Summing the rounded recalls in
    # floating point made beta 0's HM one bit lower and chose 0.2; exact fractions make it a tie.
    labels = [0, 1, 2, 3, 4, 1, 0, 2, 1, 2]
    dist = np.array([[0.3, 1.4, 0.5, 1.7, 0.3], [1.3, 0.3, 0.7, 1.5, 1.5], [0.1, 1.2, 0.7, 0.1, 1.6],
                     [0.5, 1.7, 1.6, 0.5, 1.7], [1.3, 1.7, 1.0, 0.9, 0.3], [0.1, 1.0, 0.0, 0.7, 1.6],
                     [1.3, 0.6, 0.2, 1.3, 0.2], [1.6, 1.5, 2.0, 0.1, 1.5], [1.4, 0.6, 1.1, 1.9, 1.0],
                     [1.5, 0.8, 0.3, 1.0, 1.8]])
    grid = [0.0, 0.2, 0.4]
    exact = [ref_scores(dist, labels, [0, 1, 2], [3, 4], b, exact=True)["HM"] for b in grid]
    assert exact[0] == max(exact)
    curve = gzsl_curve(dist, labels, [0, 1, 2], [3, 4], grid=grid)
    assert curve["best"] == 0 and curve["HM"] == [float(h) for h in exact]


def test_mean_class_accuracy_is_the_nearest_float(seed):
    # Summing rounded recalls (in any order) is off by a bit in about a third of such cases.
    rng = np.random.default_rng(seed)
    for _ in range(300):
        c = int(rng.integers(2, 9))
        y = rng.integers(0, c, size=int(rng.integers(5, 40)))
        p = np.where(rng.random(y.size) < 0.5, y, -1)
        want = ref_mca(list(zip(y.tolist(), p.tolist())))
        assert mean_class_accuracy(y, p) == float(want)
        s, u = float(want), float(rng.integers(1, 7)) / 7
        exact_hm = 2 * Fraction(s) * Fraction(u) / (Fraction(s) + Fraction(u))
        assert harmonic_mean(s, u) == harmonic_mean(u, s) == float(exact_hm)


def test_default_grid_is_avca():
    assert DEFAULT_BETA_GRID.shape == (16,) and DEFAULT_BETA_GRID[0] == 0 and DEFAULT_BETA_GRID[-1] == 3
    np.testing.assert_allclose(np.diff(DEFAULT_BETA_GRID), 0.2)


def test_missing_groups_give_nan():
    dist = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0]])
    r = gzsl_scores(dist, [1, 2], seen=[0], unseen=[1, 2])
    assert math.isnan(r["S"]) and math.isnan(r["HM"]) and r["U"] == 0.0 and r["ZSL"] == 0.5
    r = gzsl_scores(dist, [0, 0], seen=[0], unseen=[1])
    assert r["S"] == 0.5 and math.isnan(r["U"]) and math.isnan(r["ZSL"])
    with pytest.raises(ValueError, match="no sample of an unseen class"):
        calibrate_beta(dist, [0, 0], [0], [1])


# ------------------------------------------------------------ independent implementation, random inputs

def test_scores_match_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        dist, labels, seen, unseen = random_split(rng)
        beta = float(rng.uniform(0, 3))
        got = gzsl_scores(dist, labels, seen, unseen, beta)
        want = ref_scores(dist, labels, seen, unseen, beta)
        for k in ("S", "U", "HM", "ZSL"):
            assert abs(got[k] - want[k]) <= 1e-9, (k, got, want)


def test_per_class_terms_average_to_the_scores(seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        dist, labels, seen, unseen = random_split(rng)
        beta = float(rng.uniform(0, 3))
        terms = gzsl_per_class_accuracy(dist, labels, seen, unseen, beta)
        want = ref_scores(dist, labels, seen, unseen, beta)
        assert abs(np.nanmean(terms["gzsl"][seen]) - want["S"]) <= 1e-9
        assert abs(np.nanmean(terms["gzsl"][unseen]) - want["U"]) <= 1e-9
        assert abs(np.nanmean(terms["zsl"]) - want["ZSL"]) <= 1e-9
        assert np.isnan(np.delete(terms["zsl"], unseen)).all()
        absent = np.setdiff1d(np.arange(dist.shape[1]), labels)
        assert np.isnan(terms["gzsl"][absent]).all()


def test_calibration_matches_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        dist, labels, seen, unseen = random_split(rng)
        grid = DEFAULT_BETA_GRID.tolist()
        beta = calibrate_beta(dist, labels, seen, unseen)
        want = ref_calibrate(dist, labels, seen, unseen, grid)
        assert abs(beta - want) <= 1e-9
        curve = gzsl_curve(dist, labels, seen, unseen)
        for i, b in enumerate(grid):
            ref = ref_scores(dist, labels, seen, unseen, b)
            assert all(abs(curve[k][i] - ref[k]) <= 1e-9 for k in ("S", "U", "HM"))
        # A custom, unsorted grid with repeats of one value.
        custom = rng.permutation(np.round(rng.uniform(0, 2, 8), 1)).tolist()
        assert abs(calibrate_beta(dist, labels, seen, unseen, custom)
                   - ref_calibrate(dist, labels, seen, unseen, custom)) <= 1e-9


def test_torch_and_list_inputs_agree(seed):
    rng = np.random.default_rng(seed)
    dist, labels, seen, unseen = random_split(rng)
    want = gzsl_scores(dist, labels, seen, unseen, 0.7)
    assert gzsl_scores(torch.as_tensor(dist), torch.as_tensor(labels), seen, unseen, 0.7) == want
    assert gzsl_scores(dist.tolist(), labels.tolist(), np.array(seen), tuple(unseen), np.float32(0.7)) == want


# ------------------------------------------------------------ distances

def test_class_distances_match_loops(seed):
    rng = np.random.default_rng(seed)
    for n, c, e in ((7, 5, 3), (1, 1, 300), (40, 9, 16)):
        x, emb = rng.normal(size=(n, e)) * 3, rng.normal(size=(c, e)) + 0.5
        l2 = class_distances(x, emb)
        cos = class_distances(torch.as_tensor(x, dtype=torch.float32), emb, metric="cosine")
        for i in range(n):
            for j in range(c):
                want = math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i], emb[j])))
                assert abs(l2[i, j] - want) <= 1e-9 * max(1.0, want)
                xi = x[i].astype(np.float32).astype(np.float64)  # the tensor was float32
                dot = sum(a * b for a, b in zip(xi, emb[j]))
                want = 1 - dot / (math.sqrt(sum(a * a for a in xi)) * math.sqrt(sum(b * b for b in emb[j])))
                assert abs(cos[i, j] - want) <= 1e-9
        assert l2.dtype == np.float64 and l2.shape == (n, c)


def test_class_distances_blocks_large_inputs(seed, monkeypatch):
    import zsar.eval.gzsl as gzsl

    rng = np.random.default_rng(seed)
    x, emb = rng.normal(size=(37, 6)), rng.normal(size=(5, 6))
    whole = class_distances(x, emb)
    monkeypatch.setattr(gzsl, "_DISTANCE_BLOCK_BYTES", 8 * 30 * 4)  # 4 rows per block
    np.testing.assert_array_equal(class_distances(x, emb), whole)


def test_class_distances_errors():
    with pytest.raises(ValueError, match="metric"):
        class_distances(np.ones((2, 3)), np.ones((2, 3)), metric="l1")
    with pytest.raises(ValueError, match="share E"):
        class_distances(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        class_distances(np.array([[np.nan, 1.0]]), np.ones((2, 2)))


# ------------------------------------------------------------ per-class accuracy and errors

def test_per_class_accuracy(seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 6, 50), rng.integers(0, 6, 50)
    got = per_class_accuracy(y, p, 8)
    for c in range(8):
        mine = [b for a, b in zip(y, p) if a == c]
        if mine:
            assert got[c] == pytest.approx(sum(b == c for b in mine) / len(mine), abs=1e-12)
        else:
            assert math.isnan(got[c])
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\)"):
        per_class_accuracy([0, 3], [0, 0], 3)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"seen": [0, 1], "unseen": [1, 2]}, ValueError, "share classes"),
    ({"seen": [0, 5]}, ValueError, r"seen must be in \[0, 4\)"),
    ({"unseen": []}, ValueError, "unseen must be a non-empty"),
    ({"seen": [0, 0]}, ValueError, "repeats"),
    ({"labels": [0, 3]}, ValueError, r"labels \[3\] are neither"),
    ({"labels": [0]}, ValueError, r"labels must have shape \(2,\)"),
    ({"beta": math.inf}, ValueError, "beta must be finite"),
    ({"beta": "0.5x"}, TypeError, "beta must be a real number"),
    ({"dist": [[0.0, np.nan, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]}, ValueError, "NaN"),
])
def test_score_errors(kwargs, error, match):
    args = {"dist": np.ones((2, 4)), "labels": [0, 2], "seen": [0, 1], "unseen": [2], "beta": 0.0}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        gzsl_scores(**args)


def test_nan_outside_the_split_and_infinite_distances_are_fine():
    dist = np.array([[0.5, np.inf, np.nan], [np.inf, 0.2, np.nan]])
    assert gzsl_scores(dist, [0, 1], [0], [1]) == {"S": 1.0, "U": 1.0, "HM": 1.0, "ZSL": 1.0}
    with pytest.raises(ValueError, match="grid"):
        calibrate_beta(dist, [0, 1], [0], [1], grid=[])
