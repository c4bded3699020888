"""Tests of the semantic-space baseline and the cross-validated choice of (ϑ, K, ρ)."""

import numpy as np
import pytest
import torch

from zsar.zeroshot import semantic_space_baseline, semantic_space_scores


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
    # The scores rank every unseen label by its relatedness to the predicted seen class (top-5 and
    # the evaluation runner use them); their argmax is the baseline's prediction.
    scores = semantic_space_scores(pred, m)
    assert scores.shape == (40, 7) and np.array_equal(scores, m[:, pred].T)
    assert scores.argmax(axis=1).tolist() == expected


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


# ---------------------------------------------------------------- cross-validated (ϑ, K, ρ)

import itertools  # noqa: E402

from zsar.zeroshot import SelectionResult, select_transfer_params  # noqa: E402
from zsar.zeroshot.transfer import transfer_assignment_closed_form  # noqa: E402


def _hub_instance(rng, n_atoms=6, per_class=4):
    """Seen "atom" classes, and a fold of "compound" classes (atom pairs) plus a hub twin.

    Compound (p, q) looks like atoms p + q, but its label is also related to a hub class h; the hub
    twin (an unseen class in the same fold) is almost identical to h in label space, so the relative-
    distance constraint with ϑ = 0.25 drops h from every compound while keeping the shared atoms.
    Compounds alternate between a heavy (w = 3, h is the nearest label) and a light hub term
    (w = 0.3, h is third), so only (ϑ = 0.25, K >= 3, ρ >= 2) gives every compound exactly {p, q}:
    K = 2 keeps a single atom for heavy compounds, ϑ = 0 keeps h, ϑ = 0.9 drops shared atoms, ρ = 1
    keeps one atom. Returns features, labels, label embeddings, prototypes and the fold.
    """
    pairs = list(itertools.combinations(range(n_atoms), 2))
    hub, dim = n_atoms, n_atoms + 3
    qe = np.linalg.qr(rng.normal(size=(dim, dim)))[0]  # orthonormal label directions
    qv = np.linalg.qr(rng.normal(size=(dim, dim)))[0]  # orthonormal visual directions
    emb = [qe[a] for a in range(n_atoms + 1)]
    vis = [qv[a] for a in range(n_atoms + 1)]
    for i, (p, q) in enumerate(pairs):
        emb.append(qe[p] + qe[q] + (3.0 if i % 2 == 0 else 0.3) * qe[hub])
        vis.append(qv[p] + qv[q])
    emb.append(qe[hub] + 0.1 * qe[hub + 1])  # the hub twin
    vis.append(qv[hub])
    emb, vis = np.array(emb), np.array(vis)
    vis /= np.linalg.norm(vis, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(emb)), per_class)
    x = vis[y] + 0.01 * rng.normal(size=(y.size, dim))
    return x, y, emb, vis, np.arange(n_atoms + 1, len(emb))


def test_selection_picks_the_clearly_best_point(seed):
    rng = np.random.default_rng(seed)
    x, y, emb, protos, fold = _hub_instance(rng)
    result = select_transfer_params(
        x, y, emb, protos, thetas=(0.0, 0.25, 0.9), ks=(1, 2, 3, 4), rhos=(1, 2, 3), folds=[fold], progress=False
    )
    assert isinstance(result, SelectionResult)
    # Every point of the right class of assignments is perfect; the tie rule takes ρ, then K, smallest.
    assert result.best_params == {"theta": 0.25, "k": 3, "rho": 2}
    assert result.score == 1.0
    assert len(result.grid) == 3 * 4 * 3 and result.fold_scores.shape == (36, 1)
    for row in result.grid:
        if row["theta"] == 0.25 and row["k"] >= 3 and row["rho"] >= 2:
            assert row["mean_top1"] == 1.0
        else:
            assert row["mean_top1"] <= 0.8, row
    assert "theta" in result.table().splitlines()[0]


def _bruteforce_fold_top1(x, y, emb, fold, theta, k, rho):
    """Independent evaluation of one fold: closed-form transfer, explicit loops for Eq. 6 and cosine."""
    rest = [c for c in range(emb.shape[0]) if c not in set(fold)]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    m = unit[fold] @ unit[rest].T
    a = transfer_assignment_closed_form(m, k, theta, rho)
    protos = {c: x[y == c].mean(axis=0) for c in rest}
    comp = []
    for j in range(len(fold)):
        w = [a[j, i] * m[j, i] for i in range(len(rest))]
        comp.append(sum(wi * protos[c] for wi, c in zip(w, rest)) / sum(w))
    comp = np.array(comp)
    comp /= np.linalg.norm(comp, axis=1, keepdims=True)
    hits = []
    for xi, yi in zip(x, y):
        if yi in fold:
            sims = comp @ (xi / np.linalg.norm(xi))
            # Fold classes sharing one seen class have equal prototypes: a tie, lowest index wins.
            pred = int(np.flatnonzero(sims >= sims.max() - 1e-9)[0])
            hits.append(pred == list(fold).index(yi))
    return np.mean(hits)


def test_selection_random_folds_match_bruteforce(seed):
    rng = np.random.default_rng(seed)
    n_classes, dim = 23, 12
    # Positive-leaning embeddings so every class has a positively related class in the rest.
    emb = rng.normal(size=(n_classes, 16)) + 1.0
    centers = rng.normal(size=(n_classes, dim))
    y = rng.permutation(np.repeat(np.arange(n_classes), 5))
    x = centers[y] + 0.8 * rng.normal(size=(y.size, dim))
    grid = dict(thetas=(0.0, 0.5), ks=(1, 4), rhos=(1, 3))
    r1 = select_transfer_params(torch.as_tensor(x), y, emb, seed=seed, progress=False, **grid)
    r2 = select_transfer_params(x, y, emb, seed=seed, progress=False, **grid)
    # Folds: seeded, a partition of the classes into 5 near-equal parts.
    assert [f.tolist() for f in r1.folds] == [f.tolist() for f in r2.folds]
    assert sorted(np.concatenate(r1.folds).tolist()) == list(range(n_classes))
    assert sorted(f.size for f in r1.folds) == [4, 4, 5, 5, 5]
    np.testing.assert_allclose(r1.fold_scores, r2.fold_scores)
    for row, scores in zip(r1.grid, r1.fold_scores):
        for fold, score in zip(r1.folds, scores):
            expected = _bruteforce_fold_top1(x, y, emb, fold.tolist(), row["theta"], row["k"], row["rho"])
            assert score == pytest.approx(expected, abs=1e-12)
        assert row["mean_top1"] == pytest.approx(scores.mean())
    best = max(r1.grid, key=lambda r: (r["mean_top1"], -r["rho"], -r["k"], -r["theta"]))
    assert r1.best_params == {key: best[key] for key in ("theta", "k", "rho")}
    other = select_transfer_params(x, y, emb, seed=seed + 1, progress=False, **grid)
    assert [f.tolist() for f in other.folds] != [f.tolist() for f in r1.folds]


def test_selection_errors(seed):
    rng = np.random.default_rng(seed)
    emb = rng.uniform(0.1, 1, size=(10, 4))
    y = np.repeat(np.arange(10), 2)
    x = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="labels must have shape"):
        select_transfer_params(x, y[:-1], emb, progress=False)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        select_transfer_params(x, y + 1, emb, progress=False)
    with pytest.raises(ValueError, match="at least 12 seen classes"):
        select_transfer_params(x, y, emb, n_folds=6, progress=False)
    with pytest.raises(ValueError, match="prototypes must have shape"):
        select_transfer_params(x, y, emb, np.zeros((10, 4)), progress=False)
    with pytest.raises(ValueError, match="features contains NaN"):
        select_transfer_params(np.where(x > 1, np.nan, x), y, emb, progress=False)
    with pytest.raises(ValueError, match="rhos"):
        select_transfer_params(x, y, emb, rhos=(), progress=False)
    with pytest.raises(ValueError, match="no videos"):
        select_transfer_params(x[y < 8], y[y < 8], emb, np.zeros((10, 3)) + 1, folds=[[8, 9]], progress=False)
    bad = emb.copy()
    bad[0] = -1.0  # negatively related to every other class
    with pytest.raises(ValueError, match=r"classes \[0\] have cosine <= 0"):
        select_transfer_params(x, y, bad, folds=[[0, 1]], progress=False)
