"""Both attention ops on non-finite inputs and extreme scales: every backend, generated from the
backends' declarations, against the two float64 bounds of ``dense_reference.attention_bounds``.

Every backend must (1) never hide a non-finite value: where the exact masked math is NaN/inf, so is
the backend (a NaN key used to give a finite output on the cpu backend, with finite grad_k beside a
NaN grad_q); (2) produce no non-finite value that a dense computation over the valid tokens does not
(so padding positions are never read, and a huge scale cannot overflow: scale 1e10 used to give
non-finite cpu outputs, and scale 1e10/1e20 a non-finite Triton grad_k on hosts whose BLAS rounded
the backward's scores above the forward's); (3) agree with the exact math wherever that is finite
(at huge scales, where the softmax is one-hot: the output and grad_v of rows whose best score is
clear of the runner-up); (4) write exactly 0 in padding rows (the reference backend used to leave
NaN there when a value was inf). Where the two bounds coincide (e.g. a non-finite key that every
valid query attends), all backends agree exactly.

Nothing here depends on how the host rounds: the bounds are float64, and the huge-scale checks use
only what is exact in any precision (finiteness, one-hot rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from dense_reference import (
    allowed_mask,
    attention_bounds,
    bottleneck_mask,
    separated_rows,
)
from ops_params import declared_backend_params, skip_unless_usable
from zsar.ops import bottleneck_attention, masked_attention
from zsar.ops.bottleneck_attention import dispatcher as bottleneck_dispatcher
from zsar.ops.masked_attention import dispatcher as masked_dispatcher

# The Triton interpreter computes with numpy, which warns about every NaN/inf it meets.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

NAN, INF = float("nan"), float("inf")
B, H, L = 3, 2, 12


@dataclass(frozen=True)
class OpLayout:
    """One op with its mask on the test's (B, H, L) inputs: which positions are valid, which pairs
    attend, and named positions the cases edit."""

    name: str
    dispatcher: object
    call: Callable  # (q, k, v, scale, backend) -> out
    allowed: torch.Tensor  # (B, L, L)
    fixed: int  # a position valid in every sample (a visual / fusion token)
    late: int  # a position valid in samples 0 and 1 only (a word / late stream token)

    @property
    def valid(self) -> torch.Tensor:
        return self.allowed.any(-1)


N_VISUAL, N_TEXT = 5, [3, 7, 0]  # masked: sample 0 has padding rows 8..11, 1 none, 2 only visual tokens
N_FUSION, N_VALID = 2, [6, 10, 0]  # bottleneck: padding 6..9 in sample 0, none in 1, only fusion in 2


def _masked(mode: str) -> OpLayout:
    def call(q, k, v, scale, backend):
        n_text = torch.tensor(N_TEXT, dtype=torch.int32, device=q.device)
        return masked_attention(q, k, v, N_VISUAL, n_text, mode=mode, scale=scale, backend=backend)

    return OpLayout(f"masked-{mode}", masked_dispatcher, call, allowed_mask(B, L, N_VISUAL, N_TEXT, mode),
                    fixed=1, late=N_VISUAL + 1)


def _bottleneck() -> OpLayout:
    def call(q, k, v, scale, backend):
        n_valid = torch.tensor(N_VALID, dtype=torch.int32, device=q.device)
        return bottleneck_attention(q, k, v, n_valid, N_FUSION, scale=scale, backend=backend)

    return OpLayout("bottleneck", bottleneck_dispatcher, call, bottleneck_mask(L, N_VALID, N_FUSION),
                    fixed=L - 1, late=3)


LAYOUTS = {layout.name: layout for layout in (_masked("rest"), _masked("full"), _bottleneck())}


def _all_scores_neg_inf(op, q, k):
    """One query of sample 2 gets -inf for every key it attends (every valid key of sample 2)."""
    keys = op.valid[2]
    k[2, 0, keys, 0] = INF
    row = int(keys.nonzero()[0])
    q[2, 0, row, :] = 0.0
    q[2, 0, row, 0] = -1.0


def _padding_edit(op, q, k, v, d):
    """Non-finite values in every padding position of sample 0: never read, so they change nothing."""
    pad = ~op.valid[0]
    for t, value in ((q, NAN), (k, INF), (v, -INF), (d, NAN)):
        t[0, :, pad] = value


# name -> edit(op, q, k, v, dout) in place; a float it returns is the softmax scale (else 1/sqrt(Dh))
CASES = {
    "nan_key_fixed": lambda op, q, k, v, d: k[0, 0, op.fixed, 3].fill_(NAN),
    "nan_key_late": lambda op, q, k, v, d: k[1, 1, op.late, 0].fill_(NAN),
    # +inf in one key coordinate: queries with a positive coordinate get +inf, negative -inf
    "inf_key_fixed": lambda op, q, k, v, d: k[0, :, op.fixed + 1 if op.fixed + 1 < L else 0, 0].fill_(INF),
    "inf_key_late": lambda op, q, k, v, d: k[1, 0, op.late + 2, 4].fill_(-INF),
    "nan_query_fixed": lambda op, q, k, v, d: q[0, 1, 0, 2].fill_(NAN),
    "nan_query_late": lambda op, q, k, v, d: q[1, 0, op.late, 2].fill_(NAN),
    "inf_value_fixed": lambda op, q, k, v, d: v[0, 1, op.fixed, 5].fill_(INF),
    "inf_value_late": lambda op, q, k, v, d: v[1, 0, op.late + 1, 1].fill_(-INF),
    "nan_upstream_grad": lambda op, q, k, v, d: d[1, 1, op.late, 4].fill_(NAN),
    "inf_upstream_grad_fixed": lambda op, q, k, v, d: d[2, 0, op.fixed, :].fill_(INF),
    "all_scores_neg_inf": lambda op, q, k, v, d: _all_scores_neg_inf(op, q, k),
    "huge_scale_1e10": lambda op, q, k, v, d: 1e10,
    "huge_scale_1e20": lambda op, q, k, v, d: 1e20,
    "negative_scale": lambda op, q, k, v, d: -0.7,
    "nonfinite_padding": _padding_edit,
}

TOLERANCE = {torch.float64: (1e-10, 1e-9), torch.float32: (5e-5, 2e-4)}


def _inputs(op: OpLayout, case: str, seed: int, head_dim: int, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, L, head_dim, generator=gen, dtype=torch.float64).to(dtype) for _ in range(4))
    scale = CASES[case](op, q, k, v, dout)
    return q, k, v, dout, (scale if isinstance(scale, float) else head_dim ** -0.5)


def _run(op: OpLayout, backend, device, q, k, v, dout, scale):
    leaves = [t.to(device).requires_grad_() for t in (q, k, v)]
    out = op.call(*leaves, scale, backend)
    grads = torch.autograd.grad(out, leaves, dout.to(device))
    return [t.detach().cpu() for t in (out, *grads)]


def _params(dtypes, head_dims=None):
    """(layout, backend, device, dtype[, head_dim]) for every backend that implements each layout's
    mask kind. Head dim 17 (the cpu backend's generic path beside its AVX2 one at 16) runs by default
    on the cpu backend and with -m slow on the others, where 16 and 17 take the same code."""
    params = []
    for name, op in LAYOUTS.items():
        kind = "bottleneck" if name == "bottleneck" else name.split("-")[1]
        for p in declared_backend_params(op.dispatcher, dtypes, mask_kind=kind):
            if head_dims is None:
                params.append(pytest.param(name, *p.values, id=f"{name}-{p.id}"))
                continue
            for d in head_dims:
                slow = d != head_dims[0] and p.values[0] != "cpu"
                params.append(pytest.param(name, *p.values, d, id=f"{name}-{p.id}-{d}",
                                           marks=[pytest.mark.slow] if slow else []))
    return params


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layout,backend,device,dtype,head_dim", _params((torch.float32, torch.float64), (16, 17)))
def test_nonfinite_inputs_lie_between_exact_and_dense(layout, backend, device, dtype, head_dim, case, seed):
    op = LAYOUTS[layout]
    skip_unless_usable(op.dispatcher, backend, device, dtype)
    q, k, v, dout, scale = _inputs(op, case, seed, head_dim, dtype)
    got = _run(op, backend, device, q, k, v, dout, scale)
    exact, dense = attention_bounds(q, k, v, dout, op.allowed, op.valid, scale)
    atol, rtol = TOLERANCE[dtype]
    huge = abs(scale) >= 1e3
    if huge:  # one-hot softmax: out and grad_v are exact on rows (keys) clear of near ties
        rows = separated_rows(q, k, op.allowed, scale) | ~op.valid[:, None, :]
        keys = ~(op.allowed[:, None] & ~rows[..., None]).any(-2)  # every row attending the key is clear
        exact_where = {"out": rows, "dv": keys}
    for name, g, lo, hi in zip(("out", "dq", "dk", "dv"), got, exact, dense):
        g = g.double()
        got_bad, exact_bad, dense_bad = (~torch.isfinite(t) for t in (g, lo, hi))
        hidden = exact_bad & ~got_bad
        assert not hidden.any(), f"{name}: {int(hidden.sum())} entries finite where the exact math is not"
        extra = got_bad & ~dense_bad
        assert not extra.any(), f"{name}: {int(extra.sum())} non-finite entries where even the dense math is finite"
        if not huge:
            torch.testing.assert_close(g[~dense_bad], lo[~dense_bad], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
        elif name in exact_where:  # dq, dk at a huge scale are scale x (rounding of dP - delta): no check
            keep = exact_where[name][..., None].expand_as(g) & ~dense_bad
            torch.testing.assert_close(g[keep], lo[keep], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
        pad = ~op.valid[:, None, :, None].expand_as(g)
        assert torch.all(g[pad] == 0), f"{name}: padding rows are not 0"


@pytest.mark.parametrize("layout,backend,device,dtype", _params((torch.float32,)))
def test_nan_key_gives_nan_everywhere_it_is_attended(layout, backend, device, dtype, seed):
    """A NaN key that every valid query of its sample attends (a visual token / a fusion token)
    makes the output and all three gradients NaN in every valid row of its sample and head (grad_k
    included) on every backend, and nowhere else."""
    op = LAYOUTS[layout]
    skip_unless_usable(op.dispatcher, backend, device, dtype)
    q, k, v, dout, scale = _inputs(op, "nan_key_fixed", seed, 64, dtype)
    rows = op.valid[0]
    for name, t in zip(("out", "dq", "dk", "dv"), _run(op, backend, device, q, k, v, dout, scale)):
        assert torch.isnan(t[0, 0, rows]).all(), f"{name} hides the NaN key"
        assert torch.isfinite(t[0, 1]).all() and torch.isfinite(t[1:]).all(), f"{name}: NaN leaked to another head/sample"


# OpenBLAS kernels every x86-64 host can run (forcing AVX-512 ones on an AVX2 host would fault).
# Under the Triton interpreter tl.dot is numpy's matmul, whose summation order is the BLAS kernel's:
# the huge-scale Triton cases once failed under Haswell/Zen kernels (AMD EPYC hosts) and passed
# under SkylakeX ones, so they are run here under each portable kernel, whatever the host picks.
# Haswell (the kernel of the failing hosts) runs by default; the older ones with -m slow.
PORTABLE_BLAS_KERNELS = [
    "Haswell",
    pytest.param("Sandybridge", marks=pytest.mark.slow),
    pytest.param("Nehalem", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("kernel", PORTABLE_BLAS_KERNELS)
def test_triton_huge_scales_under_each_blas_kernel(kernel, tmp_path):
    import os
    import subprocess
    import sys

    pytest.importorskip("threadpoolctl")
    skip_unless_usable(masked_dispatcher, "triton", "cpu", torch.float32)
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "TRITON_INTERPRET": "1"}
    check = subprocess.run(
        [sys.executable, "-c", "import numpy, threadpoolctl; print([i.get('architecture') for i in "
         "threadpoolctl.threadpool_info() if i.get('internal_api') == 'openblas'])"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    if kernel not in check.stdout:
        pytest.skip(f"numpy's BLAS is not an OpenBLAS that honours OPENBLAS_CORETYPE ({check.stdout.strip()})")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k",
         "test_nonfinite_inputs_lie_between_exact_and_dense and triton-cpu and huge_scale and -16-",
         "-o", "addopts="],
        env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(__file__),
    )
    assert run.returncode == 0, f"OPENBLAS_CORETYPE={kernel}:\n{run.stdout[-3000:]}"
    assert " passed" in run.stdout and "6 passed" in run.stdout.splitlines()[-1], run.stdout[-500:]
