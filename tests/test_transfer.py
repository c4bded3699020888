"""Semantic transfer (ResT §3.3): the HiGHS integer program against independent optima, the
constraints checked from their definitions, degenerate inputs, Eq. 6 and the prototype helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from zsar.zeroshot import (
    composite_prototypes,
    cosine_similarity_matrix,
    nearest_prototype,
    transfer_assignment,
    transfer_assignment_closed_form,
)

# ---------------------------------------------------------------- independent reference


def ref_allowed(m: np.ndarray, k: int, theta: float) -> np.ndarray:
    """Allowed edges straight from Eq. 2, 3, 5 (plus m > 0), with plain loops."""
    n_unseen, n_seen = m.shape
    allowed = np.zeros(m.shape, dtype=bool)
    for j in range(n_unseen):
        knn = sorted(range(n_seen), key=lambda i: (1.0 - m[j, i], i))[:k]
        for i in knn:
            if m[j, i] <= 0:
                continue
            lam = 1
            for kk in range(n_unseen):
                if kk == j:
                    continue
                num, den = 1.0 - m[kk, i], 1.0 - m[j, i]
                ratio = num / den if den > 0 else (np.inf if num > 0 else 1.0)
                if ratio <= theta:
                    lam = 0
            allowed[j, i] = bool(lam)
    return allowed


def check_constraints(a: np.ndarray, m: np.ndarray, k: int, theta: float, rho: int, capacity=None):
    assert a.dtype == bool and a.shape == m.shape
    allowed = ref_allowed(m, k, theta)
    assert not (a & ~allowed).any(), "an edge violates KNN (Eq. 2), Λ (Eq. 3) or m > 0"
    assert (a.sum(axis=1) <= rho).all(), "a row exceeds ρ (Eq. 4)"
    if capacity is not None:
        assert (a.sum(axis=0) <= capacity).all(), "a seen class exceeds the capacity"


def milp_optimum(m: np.ndarray, allowed: np.ndarray, rho: int, capacity: int) -> float:
    """Optimum of the capacity-coupled program with scipy's MILP over all γκ binaries."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    n_unseen, n_seen = m.shape
    row_sum = np.kron(np.eye(n_unseen), np.ones((1, n_seen)))
    col_sum = np.kron(np.ones((1, n_unseen)), np.eye(n_seen))
    res = scipy_optimize.milp(
        c=-m.ravel(),
        integrality=np.ones(m.size),
        bounds=scipy_optimize.Bounds(0, allowed.ravel().astype(float)),
        constraints=[
            scipy_optimize.LinearConstraint(row_sum, -np.inf, rho),
            scipy_optimize.LinearConstraint(col_sum, -np.inf, capacity),
        ],
    )
    assert res.status == 0
    return -res.fun


def random_relatedness(rng: np.random.Generator, n_unseen: int, n_seen: int, dim: int = 8) -> np.ndarray:
    """Cosine similarities of random label embeddings sharing a common direction (mostly positive)."""
    common = rng.standard_normal(dim)
    u = rng.standard_normal((n_unseen, dim)) + common
    s = rng.standard_normal((n_seen, dim)) + common
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    return np.clip(u @ s.T, -1, 1)


def objective(a, m) -> float:
    return float((a * m).sum())


# ---------------------------------------------------------------- the program


def test_separable_program_matches_closed_form_and_constraints(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        g, s = int(rng.integers(1, 12)), int(rng.integers(1, 25))
        m = random_relatedness(rng, g, s)
        k, rho = int(rng.integers(0, s + 2)), int(rng.integers(0, 5))
        theta = float(rng.uniform(0.0, 1.5))
        a = transfer_assignment(m, k, theta, rho, fallback="none")
        ref = transfer_assignment_closed_form(m, k, theta, rho, fallback="none")
        check_constraints(a, m, k, theta, rho)
        check_constraints(ref, m, k, theta, rho)
        assert objective(a, m) == pytest.approx(objective(ref, m), abs=1e-9)
        # The closed form is optimal by its own definition: the ρ largest allowed weights per row.
        allowed = ref_allowed(m, k, theta)
        best = sum(sum(sorted(m[j][allowed[j]], reverse=True)[:rho]) for j in range(g))
        assert objective(ref, m) == pytest.approx(best, abs=1e-9)


def test_capacity_program_matches_milp(seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        g, s = int(rng.integers(2, 15)), int(rng.integers(2, 20))
        m = random_relatedness(rng, g, s)
        k, rho, cap = int(rng.integers(1, 7)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        theta = float(rng.uniform(0.3, 1.0))
        a = transfer_assignment(m, k, theta, rho, capacity=cap, fallback="none")
        check_constraints(a, m, k, theta, rho, cap)
        best = milp_optimum(m, ref_allowed(m, k, theta), rho, cap)
        assert objective(a, m) == pytest.approx(best, abs=1e-7)


def test_capacity_program_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(5):
        m = random_relatedness(rng, 3, 4)
        k, theta, rho, cap = 3, 0.8, 2, 1
        a = transfer_assignment(m, k, theta, rho, capacity=cap, fallback="none")
        allowed = ref_allowed(m, k, theta)
        edges = list(zip(*np.nonzero(allowed)))
        best = 0.0
        for bits in itertools.product((0, 1), repeat=len(edges)):
            x = np.zeros(m.shape, dtype=bool)
            for on, e in zip(bits, edges):
                x[e] = bool(on)
            if (x.sum(1) <= rho).all() and (x.sum(0) <= cap).all():
                best = max(best, objective(x, m))
        assert objective(a, m) == pytest.approx(best, abs=1e-9)


def test_capacity_binds():
    # Both unseen classes prefer seen class 0; with capacity 1 only one may have it.
    m = np.array([[0.9, 0.5], [0.8, 0.1]])
    a = transfer_assignment(m, k=2, theta=-1.0, rho=1, capacity=1)
    np.testing.assert_array_equal(a, [[False, True], [True, False]])
    np.testing.assert_array_equal(transfer_assignment(m, 2, -1.0, 1), [[True, False], [True, False]])


def test_knn_ties_go_to_lower_index():
    m = np.array([[0.5, 0.7, 0.5, 0.5]])
    for fn in (transfer_assignment, transfer_assignment_closed_form):
        np.testing.assert_array_equal(fn(m, 2, 0.0, 3), [[True, True, False, False]])
        np.testing.assert_array_equal(fn(m, 3, 0.0, 3), [[True, True, True, False]])


def test_relative_distance_constraint():
    # Seen 0 is much closer to unseen 1 (distance 0.1) than to unseen 0 (distance 0.6): ratio
    # 0.1/0.6 ≈ 0.17, so for ϑ = 0.5 seen 0 is denied to unseen 0 but not the reverse (0.6/0.1 = 6).
    m = np.array([[0.4, 0.3], [0.9, 0.0]])
    a = transfer_assignment(m, k=2, theta=0.5, rho=2, fallback="none")
    np.testing.assert_array_equal(a, [[False, True], [True, False]])
    b = transfer_assignment(m, k=2, theta=0.1, rho=2, fallback="none")
    np.testing.assert_array_equal(b, [[True, True], [True, False]])  # m = 0 edge is never taken


def test_identical_embeddings():
    # Unseen 0 is identical to seen 0 (distance 0): x / 0 = ∞, so Λ = 1 for any finite ϑ.
    m = np.array([[1.0, 0.2], [0.5, 0.3]])
    a = transfer_assignment(m, k=1, theta=1e6, rho=1, fallback="none")
    assert a[0, 0]
    # Two unseen classes both identical to seen 0: 0 / 0 = 1, so Λ = 0 iff ϑ >= 1.
    m = np.array([[1.0, 0.2], [1.0, 0.3]])
    assert transfer_assignment(m, 1, 0.99, 1, fallback="none")[:, 0].all()
    assert not transfer_assignment(m, 1, 1.0, 1, fallback="none")[:, 0].any()


def test_single_unseen_class_has_no_relative_constraint():
    m = np.array([[0.1, 0.6, 0.3, -0.2]])
    a = transfer_assignment(m, k=4, theta=1e9, rho=2)
    np.testing.assert_array_equal(a, [[False, True, True, False]])


def test_negative_edges_are_excluded():
    m = np.array([[0.4, -0.3, 0.0], [0.1, 0.2, 0.3]])
    a = transfer_assignment(m, k=3, theta=-1.0, rho=3, fallback="none")
    assert not a[0, 1] and not a[0, 2] and a[0, 0]


@pytest.mark.parametrize("fn", [transfer_assignment, transfer_assignment_closed_form])
@pytest.mark.parametrize(
    "kwargs", [dict(k=5, theta=0.5, rho=0), dict(k=0, theta=0.5, rho=3), dict(k=5, theta=1e9, rho=3)]
)
def test_empty_rows_take_the_fallback(fn, kwargs, seed):
    # ρ = 0, K = 0, or ϑ so large that every Λ is 0: no edge survives anywhere.
    m = random_relatedness(np.random.default_rng(seed), 6, 9)
    nearest = fn(m, **kwargs)
    expected = np.zeros(m.shape, dtype=bool)
    expected[np.arange(6), m.argmax(axis=1)] = True
    np.testing.assert_array_equal(nearest, expected)
    assert not fn(m, **kwargs, fallback="none").any()


def test_fallback_only_touches_empty_rows():
    # Row 1's only positive neighbour is denied by Λ (seen 0 is far closer to unseen 0).
    m = np.array([[0.95, 0.1], [0.3, -0.5]])
    a = transfer_assignment(m, k=2, theta=0.5, rho=1)
    np.testing.assert_array_equal(a, [[True, False], [True, False]])
    assert not transfer_assignment(m, 2, 0.5, 1, fallback="none")[1].any()


def test_accepts_tensors_and_lists():
    m = [[0.5, 0.2], [0.1, 0.7]]
    expected = transfer_assignment(np.array(m), 2, 0.0, 1)
    np.testing.assert_array_equal(transfer_assignment(m, 2, 0.0, 1), expected)
    np.testing.assert_array_equal(transfer_assignment(torch.tensor(m, requires_grad=True), 2, 0.0, 1), expected)


def test_time_limit_reached_raises(seed):
    m = random_relatedness(np.random.default_rng(seed), 20, 30)
    with pytest.raises(RuntimeError, match=r"(?i)time.limit"):
        transfer_assignment(m, 5, 0.5, 2, capacity=1, time_limit=1e-12)


@pytest.mark.parametrize(
    "m, kwargs, error, match",
    [
        ([[0.1, np.nan]], {}, ValueError, "relatedness"),
        ([[0.1, np.inf]], {}, ValueError, "relatedness"),
        ([0.1, 0.2], {}, ValueError, "2-D"),
        (np.zeros((0, 3)), {}, ValueError, "non-empty"),
        ([[1.5, 0.2]], {}, ValueError, r"\[-1, 1\]"),
        ([[0.1, 0.2]], dict(k=-1), ValueError, "k"),
        ([[0.1, 0.2]], dict(k=2.5), TypeError, "k"),
        ([[0.1, 0.2]], dict(rho=-1), ValueError, "rho"),
        ([[0.1, 0.2]], dict(theta=float("nan")), ValueError, "theta"),
        ([[0.1, 0.2]], dict(theta=float("inf")), ValueError, "theta"),
        ([[0.1, 0.2]], dict(capacity=0), ValueError, "capacity"),
        ([[0.1, 0.2]], dict(time_limit=0), ValueError, "time_limit"),
        ([[0.1, 0.2]], dict(fallback="mean"), ValueError, "fallback"),
    ],
)
def test_invalid_inputs(m, kwargs, error, match):
    args = dict(k=2, theta=0.5, rho=1) | kwargs
    with pytest.raises(error, match=match):
        transfer_assignment(m, **args)
    if "capacity" not in kwargs and "time_limit" not in kwargs:
        with pytest.raises(error, match=match):
            transfer_assignment_closed_form(m, **args)


# ---------------------------------------------------------------- Eq. 6 and classification


def test_composite_prototypes_hand_example():
    phi = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    m = np.array([[0.5, 0.25, 0.9], [0.2, 0.4, 0.6]])
    a = np.array([[1, 1, 0], [0, 0, 1]])
    expected = np.array([[2 / 3, 1 / 3], [2.0, 2.0]])
    np.testing.assert_allclose(composite_prototypes(phi, m, a), expected)
    phi_t = torch.tensor(phi, dtype=torch.float32)
    out = composite_prototypes(phi_t, torch.tensor(m), torch.tensor(a, dtype=torch.bool))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32))


def test_composite_prototypes_end_to_end(seed):
    rng = np.random.default_rng(seed)
    m = random_relatedness(rng, 7, 12)
    phi = rng.standard_normal((12, 5))
    a = transfer_assignment(m, 4, 0.7, 2)
    out = composite_prototypes(phi, m, a)
    for j in range(7):
        w = np.array([m[j, i] if a[j, i] else 0.0 for i in range(12)])
        np.testing.assert_allclose(out[j], (w[:, None] * phi).sum(0) / w.sum())


@pytest.mark.parametrize(
    "phi_shape, m, a, match",
    [
        ((3, 2), [[0.5, 0.5]], [[1, 0]], "relatedness"),
        ((2, 2), [[0.5, 0.5]], [[1, 0, 0]], "assignment shape"),
        ((2,), [[0.5, 0.5]], [[1, 0]], "seen_prototypes"),
        ((2, 2), [[0.5, 0.5]], [[2, 0]], "binary"),
        ((2, 2), [[0.5, 0.5]], [[0, 0]], "Σ a·m"),
        ((2, 2), [[-0.5, 0.5]], [[1, 0]], "Σ a·m"),
    ],
)
def test_composite_prototypes_errors(phi_shape, m, a, match):
    with pytest.raises(ValueError, match=match):
        composite_prototypes(np.ones(phi_shape), m, a)


def test_cosine_similarity_matrix(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    y[2] = 0.0
    ref = np.array(
        [[xi @ yi / (np.linalg.norm(xi) * max(np.linalg.norm(yi), 1e-8)) for yi in y] for xi in x]
    )
    np.testing.assert_allclose(cosine_similarity_matrix(x, y), ref, atol=1e-12)
    out = cosine_similarity_matrix(torch.tensor(x), y)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    with pytest.raises(ValueError, match="same D"):
        cosine_similarity_matrix(x, rng.standard_normal((5, 4)))


def test_nearest_prototype():
    protos = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    feats = np.array([[10.0, 1.0], [0.1, 3.0], [-2.0, -1.5], [1.0, 1.0]])
    expected = [0, 1, 2, 0]  # the last is a tie between 0 and 1: lowest index
    np.testing.assert_array_equal(nearest_prototype(feats, protos), expected)
    out = nearest_prototype(torch.tensor(feats, dtype=torch.float32), torch.tensor(protos))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64
    assert out.tolist() == expected


def test_solver_prints_nothing_on_stdout():
    """HiGHS writes its banner to file descriptor 1 from C++, which capsys cannot see: solve in a
    subprocess and check that its stdout is exactly the JSON printed after the solve."""
    import json
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import json
        import numpy as np
        from zsar.zeroshot import transfer_assignment
        m = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.7]])
        a = transfer_assignment(m, k=2, theta=1.0, rho=1, capacity=1)
        print(json.dumps({"assignment": a.astype(int).tolist()}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == {"assignment": [[1, 0, 0], [0, 1, 0]]}, run.stdout
