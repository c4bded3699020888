"""masked_attention on non-finite inputs and extreme scales: every backend, generated from the
backends' declarations, against the two float64 bounds of ``dense_reference.masked_attention_bounds``.

Every backend must (1) never hide a non-finite value: where the exact masked math is NaN/inf, so is
the backend (a NaN key used to give a finite output on the cpu backend, with finite grad_k beside a
NaN grad_q); (2) produce no non-finite value that a dense computation over the valid tokens does not
(so padding positions are never read, and a huge scale cannot overflow: scale 1e10 used to give
non-finite cpu outputs); (3) agree with the exact math wherever that is finite; (4) write exactly 0
in padding rows (the reference backend used to leave NaN there when a value was inf). Where the two
bounds coincide (e.g. a non-finite key that every valid query attends), all backends agree exactly.
"""

from __future__ import annotations

import pytest
import torch

from dense_reference import masked_attention_bounds
from ops_params import declared_backend_params, skip_unless_usable
from zsar.ops import masked_attention
from zsar.ops.masked_attention import dispatcher

# The Triton interpreter computes with numpy, which warns about every NaN/inf it meets.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

NAN, INF = float("nan"), float("inf")
B, H, L, N_VISUAL = 3, 2, 12, 5
N_TEXT = [3, 7, 0]  # sample 0 has padding rows 8..11, sample 1 none, sample 2 only visual tokens
WORD = N_VISUAL + 1  # a word position valid in samples 0 and 1

# name -> edit(q, k, v, dout) in place; a float it returns is the softmax scale (else 1/sqrt(Dh))
CASES = {
    "nan_key_visual": lambda q, k, v, d: k[0, 0, 1, 3].fill_(NAN),
    "nan_key_word": lambda q, k, v, d: k[1, 1, WORD, 0].fill_(NAN),
    # +inf in one key coordinate: queries with a positive coordinate get +inf, negative -inf
    "inf_key_visual": lambda q, k, v, d: k[0, :, 2, 0].fill_(INF),
    "inf_key_word": lambda q, k, v, d: k[1, 0, WORD + 2, 4].fill_(-INF),
    "nan_query_visual": lambda q, k, v, d: q[0, 1, 0, 2].fill_(NAN),
    "nan_query_word": lambda q, k, v, d: q[1, 0, WORD, 2].fill_(NAN),
    "inf_value_visual": lambda q, k, v, d: v[0, 1, 3, 5].fill_(INF),
    "inf_value_word": lambda q, k, v, d: v[1, 0, WORD + 1, 1].fill_(-INF),
    "nan_upstream_grad": lambda q, k, v, d: d[1, 1, WORD, 4].fill_(NAN),
    "inf_upstream_grad_visual": lambda q, k, v, d: d[2, 0, 1, :].fill_(INF),
    "all_scores_neg_inf": lambda q, k, v, d: _all_scores_neg_inf(q, k),
    "huge_scale_1e10": lambda q, k, v, d: 1e10,
    "huge_scale_1e20": lambda q, k, v, d: 1e20,
    "negative_scale": lambda q, k, v, d: -0.7,
}


def _all_scores_neg_inf(q, k):
    """Visual query 1 of sample 2 gets -inf for every key it attends (all visual keys)."""
    k[2, 0, :N_VISUAL, 0] = INF
    q[2, 0, 1, :] = 0.0
    q[2, 0, 1, 0] = -1.0


def _padding_edit(q, k, v, d):
    """Non-finite values in every padding position of sample 0: never read, so they change nothing."""
    n_valid = N_VISUAL + N_TEXT[0]
    for t, value in ((q, NAN), (k, INF), (v, -INF), (d, NAN)):
        t[0, :, n_valid:] = value


CASES["nonfinite_padding"] = _padding_edit

TOLERANCE = {torch.float64: (1e-10, 1e-9), torch.float32: (5e-5, 2e-4)}


def _inputs(case: str, seed: int, head_dim: int, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, L, head_dim, generator=gen, dtype=torch.float64).to(dtype) for _ in range(4))
    scale = CASES[case](q, k, v, dout)
    return q, k, v, dout, (scale if isinstance(scale, float) else head_dim ** -0.5)


def _run(backend, device, q, k, v, dout, mode, scale):
    leaves = [t.to(device).requires_grad_() for t in (q, k, v)]
    n_text = torch.tensor(N_TEXT, dtype=torch.int32, device=device)
    out = masked_attention(*leaves, N_VISUAL, n_text, mode=mode, scale=scale, backend=backend)
    grads = torch.autograd.grad(out, leaves, dout.to(device))
    return [t.detach().cpu() for t in (out, *grads)]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["rest", "full"])
@pytest.mark.parametrize("head_dim", [16, 17])  # cpu float32: the AVX2 path and the generic one
@pytest.mark.parametrize("backend,device,dtype", declared_backend_params(dispatcher, (torch.float32, torch.float64)))
def test_nonfinite_inputs_lie_between_exact_and_dense(backend, device, dtype, head_dim, mode, case, seed):
    skip_unless_usable(dispatcher, backend, device, dtype)
    q, k, v, dout, scale = _inputs(case, seed, head_dim, dtype)
    got = _run(backend, device, q, k, v, dout, mode, scale)
    exact, dense = masked_attention_bounds(q, k, v, dout, N_VISUAL, N_TEXT, mode, scale)
    atol, rtol = TOLERANCE[dtype]
    for name, g, lo, hi in zip(("out", "dq", "dk", "dv"), got, exact, dense):
        g = g.double()
        got_bad, exact_bad, dense_bad = (~torch.isfinite(t) for t in (g, lo, hi))
        hidden = exact_bad & ~got_bad
        assert not hidden.any(), f"{name}: {int(hidden.sum())} entries finite where the exact math is not"
        extra = got_bad & ~dense_bad
        assert not extra.any(), f"{name}: {int(extra.sum())} non-finite entries where even the dense math is finite"
        if abs(scale) < 1e3:  # at huge scales the softmax is one-hot and float32 ties may break differently
            torch.testing.assert_close(g[~dense_bad], lo[~dense_bad], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
        for b, n in enumerate(N_TEXT):
            assert torch.all(g[b, :, N_VISUAL + n:] == 0), f"{name}: padding rows of sample {b} are not 0"


@pytest.mark.parametrize("backend,device,dtype", declared_backend_params(dispatcher, (torch.float32,)))
def test_nan_key_gives_nan_everywhere_it_is_attended(backend, device, dtype, seed):
    """The reported case: a NaN visual key is attended by every valid query, so the output and all
    three gradients are NaN in every valid row of its sample (grad_k included) on every backend."""
    skip_unless_usable(dispatcher, backend, device, dtype)
    q, k, v, dout, scale = _inputs("nan_key_visual", seed, 64, dtype)
    n_valid = N_VISUAL + N_TEXT[0]
    for name, t in zip(("out", "dq", "dk", "dv"), _run(backend, device, q, k, v, dout, "rest", scale)):
        assert torch.isnan(t[0, 0, :n_valid]).all(), f"{name} hides the NaN key"
        assert torch.isfinite(t[0, 1]).all() and torch.isfinite(t[1:]).all(), f"{name}: NaN leaked to another head/sample"
