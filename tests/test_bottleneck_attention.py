"""bottleneck_attention: every backend runnable here against the independent float64 reference,
and the op as a torch citizen (opcheck, torch.compile, FlopCounterMode, jit.trace, bad inputs)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dense_reference import bottleneck_mask, dense_bottleneck_attention
from ops_params import backend_names, declared_backend_params, skip_unless_usable, usable_device
from zsar.ops import BackendUnavailableError, bottleneck_attention
from zsar.ops.bottleneck_attention import dispatcher


@dataclass(frozen=True)
class Case:
    id: str
    B: int
    H: int
    L: int
    D: int
    n_fusion: int
    tokens: str  # "zero" | "max" | "mixed"

    def n_valid(self, gen: torch.Generator) -> list[int]:
        hi = self.L - self.n_fusion
        if self.tokens == "zero":
            return [0] * self.B
        if self.tokens == "max":
            return [hi] * self.B
        counts = torch.randint(0, hi + 1, (self.B,), generator=gen).tolist()
        counts[0] = 0  # both extremes beside random counts
        if self.B > 1:
            counts[1] = hi
        return counts


# L from 1 to 600, including lengths that are not multiples of any tile (16, 32, 64, 128).
CASES = [
    Case("single_token", 2, 1, 1, 32, 1, "zero"),
    Case("single_token_no_fusion", 2, 1, 1, 16, 0, "max"),
    Case("no_fusion_mixed", 4, 2, 23, 32, 0, "mixed"),
    Case("no_fusion_nothing_valid", 2, 2, 9, 16, 0, "zero"),
    Case("fusion1_mixed_d16", 3, 2, 21, 16, 1, "mixed"),
    Case("fusion4_only_fusion", 3, 2, 17, 32, 4, "zero"),
    Case("fusion4_full", 2, 2, 33, 64, 4, "max"),
    Case("fusion4_mixed_d80", 3, 2, 47, 80, 4, "mixed"),
    Case("fusion4_d128", 3, 1, 70, 128, 4, "mixed"),
    Case("all_fusion", 2, 1, 5, 32, 5, "zero"),
    Case("batch1", 1, 3, 29, 64, 4, "mixed"),
    Case("L129_d64", 3, 1, 129, 64, 4, "mixed"),
    Case("L257_d32", 3, 1, 257, 32, 1, "mixed"),
    Case("L600_d64", 2, 1, 600, 64, 4, "mixed"),
    Case("L600_d128_full", 1, 1, 600, 128, 4, "max"),
]

# (atol, rtol) per dtype for outputs and gradients against float64
TOLERANCE = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (5e-5, 2e-4),
    torch.float16: (4e-3, 2e-2),
    torch.bfloat16: (3e-2, 5e-2),
}

BACKEND_PARAMS = declared_backend_params(dispatcher, mask_kind="bottleneck")
BACKENDS = backend_names(dispatcher, mask_kind="bottleneck")


def _make_inputs(case: Case, seed: int, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(seed)
    shape = (case.B, case.H, case.L, case.D)
    q, k, v, dout = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4))
    # Round to the tested dtype first, so the reference sees exactly the values the backend sees.
    q, k, v, dout = (t.to(dtype).to(torch.float64) for t in (q, k, v, dout))
    return q, k, v, dout, case.n_valid(gen)


def _run(backend, q, k, v, dout, n_valid, n_fusion, dtype, device):
    leaves = [t.to(device=device, dtype=dtype, copy=True).requires_grad_() for t in (q, k, v)]
    nv = torch.tensor(n_valid, dtype=torch.int32, device=device)
    out = bottleneck_attention(*leaves, nv, n_fusion, backend=backend)
    out.backward(dout.to(device=device, dtype=dtype))
    return out.detach(), [t.grad for t in leaves]


def _close(actual, expected, dtype, what, seed):
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(
        actual.double().cpu(), expected, atol=atol, rtol=rtol, msg=lambda m: f"{what} (seed {seed}): {m}"
    )


def _padding(L: int, n: int, n_fusion: int) -> slice:
    return slice(n, L - n_fusion)


def _reference_params() -> list:
    """Every case on every declared backend; the Triton interpreter's runs at L = 600 (6-12 s each;
    L257 covers multi-tile prefixes and tails, fusion4_d128 the head dim) are marked slow."""
    params = []
    for case in CASES:
        for p in BACKEND_PARAMS:
            backend, device, dtype = p.values
            interpreted = backend == "triton" and device == "cpu"
            slow = interpreted and case.L >= 600
            params.append(pytest.param(backend, device, dtype, case, id=f"{p.id}-{case.id}",
                                       marks=[pytest.mark.slow] if slow else []))
    return params


@pytest.mark.parametrize("backend,device,dtype,case", _reference_params())
def test_matches_dense_reference(backend, device, dtype, case, seed):
    skip_unless_usable(dispatcher, backend, device, dtype)
    q, k, v, dout, n_valid = _make_inputs(case, seed, dtype)

    out, (dq, dk, dv) = _run(backend, q, k, v, dout, n_valid, case.n_fusion, dtype, device)

    ref_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = dense_bottleneck_attention(*ref_leaves, n_valid, case.n_fusion)
    ref.backward(dout)
    assert out.dtype == dtype and out.shape == q.shape
    _close(out, ref.detach(), dtype, "output", seed)
    for name, got, leaf in zip("qkv", (dq, dk, dv), ref_leaves):
        _close(got, leaf.grad, dtype, f"d{name}", seed)

    # Padding rows are exactly 0 and padding positions get exactly 0 gradient.
    for b, n in enumerate(n_valid):
        pad = _padding(case.L, n, case.n_fusion)
        for t in (out, dq, dk, dv):
            assert torch.all(t[b, :, pad] == 0)


# The cpu kernels' tiles (csrc/cpu/tiled_attention.cpp): 48-query blocks, 128-key tiles, 16-key
# panels; (L, n_fusion, n_valid per sample, Dh): valid-token counts just under, at and over each
# boundary, a fusion tail that starts inside a key tile (the P V product in two runs), one valid
# token, none, and every head dim the models use.
TILE_EDGES = [
    (52, 4, [44, 45, 0, 1], 32),      # 48 / 49 / 4 / 5 valid tokens
    (140, 4, [124, 125, 120, 136], 64),  # 128 / 129 / 124 / full (140)
    (131, 3, [128, 113, 1, 0], 80),   # 131 / 116 (tail inside tile 0) / 4 / 3
    (300, 4, [252, 253, 180, 296], 128),  # 256 / 257 / 184 / 300
    (97, 0, [97, 96, 48, 16], 64),    # no fusion tokens: plain key padding at panel/block ends
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("L,n_fusion,n_valid,D", TILE_EDGES, ids=[f"L{e[0]}-d{e[3]}" for e in TILE_EDGES])
def test_cpu_tile_edges_match_dense_reference(L, n_fusion, n_valid, D, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(len(n_valid), 2, L, D, generator=gen, dtype=torch.float64).to(dtype).double()
                     for _ in range(4))
    out, (dq, dk, dv) = _run("cpu", q, k, v, dout, n_valid, n_fusion, dtype, "cpu")
    ref_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = dense_bottleneck_attention(*ref_leaves, n_valid, n_fusion)
    ref.backward(dout)
    _close(out, ref.detach(), dtype, "output", seed)
    for name, got, leaf in zip("qkv", (dq, dk, dv), ref_leaves):
        _close(got, leaf.grad, dtype, f"d{name}", seed)
    for b, n in enumerate(n_valid):
        for t in (out, dq, dk, dv):
            assert torch.all(t[b, :, _padding(L, n, n_fusion)] == 0)


@pytest.mark.parametrize("backend,device,dtype", [p for p in BACKEND_PARAMS if p.values[2] == torch.float32])
def test_valid_rows_ignore_padding_values(backend, device, dtype, seed):
    """Changing q, k, v at padding positions (even to non-finite values) changes no valid output and
    no gradient."""
    skip_unless_usable(dispatcher, backend, device, dtype)
    case = Case("pad", 3, 2, 40, 32, 4, "mixed")
    q, k, v, dout, n_valid = _make_inputs(case, seed, dtype)
    first = _run(backend, q, k, v, dout, n_valid, case.n_fusion, dtype, device)
    gen = torch.Generator().manual_seed(seed + 1)
    changed = []
    for t in (q, k, v):
        t = t.clone()
        for b, n in enumerate(n_valid):
            pad = _padding(case.L, n, case.n_fusion)
            t[b, :, pad] = torch.randn(t[b, :, pad].shape, generator=gen, dtype=t.dtype) * 100
            if t[b, :, pad].numel():
                t[b, 0, pad][..., 0] = float("nan")
        changed.append(t)
    second = _run(backend, *changed, dout, n_valid, case.n_fusion, dtype, device)
    torch.testing.assert_close(second[0], first[0], atol=0, rtol=0)
    for g2, g1 in zip(second[1], first[1]):
        torch.testing.assert_close(g2, g1, atol=0, rtol=0)


def test_no_fusion_is_key_padding_attention(seed):
    """With n_fusion = 0 the op is SDPA with a boolean key-padding mask (on the valid rows)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(3, 2, 19, 32, generator=gen) for _ in range(3))
    n_valid = torch.tensor([19, 7, 1], dtype=torch.int32)
    out = bottleneck_attention(q, k, v, n_valid, 0)
    keys = torch.arange(19)[None, :] < n_valid[:, None].long()
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :])
    rows = keys[:, None, :, None]
    torch.testing.assert_close(out, torch.where(rows, sdpa, 0.0), atol=2e-5, rtol=1e-4)


# ---- the op as a torch citizen ----------------------------------------------------------------------


def _inputs(seed, B=3, H=2, L=13, D=32, n_fusion=3, dtype=torch.float32, requires_grad=False, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, generator=gen, dtype=dtype).to(device).requires_grad_(requires_grad)
               for _ in range(3))
    n_valid = torch.randint(0, L - n_fusion + 1, (B,), generator=gen, dtype=torch.int32)
    n_valid[0] = 0
    return q, k, v, n_valid.to(device), n_fusion


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_fusion", [0, 3])
def test_opcheck(backend, n_fusion, seed):
    device = usable_device(dispatcher, backend)
    q, k, v, nv, nf = _inputs(seed, n_fusion=n_fusion, requires_grad=True, device=device)
    torch.library.opcheck(torch.ops.zsar.bottleneck_attention.default, (q, k, v, nv, nf, 0.2, backend))


def test_torch_compile_fullgraph_matches_eager(seed):
    q, k, v, nv, nf = _inputs(seed, requires_grad=True)

    def block(q, k, v, nv):
        return (bottleneck_attention(q, k, v, nv, nf) * 2.0).sum(-1)

    compiled = torch.compile(block, fullgraph=True)
    out = compiled(q, k, v, nv)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_out = block(q, k, v, nv)
    ref_grads = torch.autograd.grad(ref_out.sum(), (q, k, v))
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_flop_counter_counts_only_valid_pairs(seed):
    q, k, v, nv, nf = _inputs(seed, requires_grad=True)
    B, H, L, D = q.shape
    pairs = int(bottleneck_mask(L, nv.tolist(), nf).sum())
    assert pairs == sum((n + nf) ** 2 for n in nv.tolist())
    with FlopCounterMode(display=False) as counter:
        out = bottleneck_attention(q, k, v, nv, nf)
    assert counter.get_total_flops() == 4 * H * D * pairs
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    assert counter.get_total_flops() == 10 * H * D * pairs


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")  # trace's own notes
def test_jit_trace_matches_eager(seed):
    q, k, v, nv, nf = _inputs(seed)
    traced = torch.jit.trace(lambda q, k, v, nv: bottleneck_attention(q, k, v, nv, nf, check_n_valid=False),
                             (q, k, v, nv))
    torch.testing.assert_close(traced(q, k, v, nv), bottleneck_attention(q, k, v, nv, nf))


def test_auto_dispatch_explains_forced_backend():
    q, k, v, nv, nf = _inputs(0)
    with pytest.raises(ValueError, match="backend='nope' is not a backend of this op"):
        bottleneck_attention(q, k, v, nv, nf, backend="nope")
    with pytest.raises(BackendUnavailableError, match="cuda: .*cuda"):
        bottleneck_attention(q, k, v, nv, nf, backend="cuda")


# ---- bad inputs: the public function and the registered op alike ----------------------------------

B, H, L, D = 2, 2, 8, 16


def _good():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, generator=gen) for _ in range(3))
    return dict(q=q, k=k, v=v, n_valid=torch.tensor([1, L - 2], dtype=torch.int32), n_fusion=2)


# name -> (changes to the good arguments, exception, message fragment)
BAD = {
    "q_rank": (lambda a: dict(q=a["q"][0]), ValueError, r"q must have shape \(B, H, L, Dh\)"),
    "k_shape": (lambda a: dict(k=torch.zeros(B, H, L + 1, D)), ValueError, "k has shape"),
    "v_dtype": (lambda a: dict(v=a["v"].double()), TypeError, "v has dtype"),
    "int_q": (lambda a: dict(q=a["q"].long()), TypeError, "q must be a floating-point tensor"),
    "v_device": (lambda a: dict(v=a["v"].to("meta")), ValueError, "v is on meta"),
    "empty": (lambda a: {n: a[n][:, :0].contiguous() for n in "qkv"}, ValueError, "must not be empty"),
    "non_contiguous": (lambda a: dict(q=a["q"].transpose(2, 3).contiguous().transpose(2, 3)), ValueError,
                       "q must be contiguous"),
    "n_valid_dtype": (lambda a: dict(n_valid=a["n_valid"].long()), TypeError, "n_valid must have dtype torch.int32"),
    "n_valid_length": (lambda a: dict(n_valid=a["n_valid"][:1]), ValueError, r"n_valid must have shape \(2,\)"),
    "n_fusion_negative": (lambda a: dict(n_fusion=-1), ValueError, r"n_fusion must be in \[0, L=8\]"),
    "n_fusion_too_big": (lambda a: dict(n_fusion=L + 1), ValueError, r"n_fusion must be in \[0, L=8\]"),
}
# Only the public function sees these: the registered op's schema rejects a non-tensor itself, and
# values are only read by the public function (the registered op clamps, like the kernels).
BAD_VALUES = {
    "n_valid_not_tensor": (lambda a: dict(n_valid=[1, 2]), TypeError, "n_valid must be an int32 tensor"),
    "n_fusion_float": (lambda a: dict(n_fusion=2.0), TypeError, "n_fusion must be an int"),
    "n_valid_too_big": (lambda a: dict(n_valid=torch.tensor([1, L - 1], dtype=torch.int32)), ValueError,
                        r"n_valid values must be in \[0, L - n_fusion = 6\]"),
    "n_valid_negative": (lambda a: dict(n_valid=torch.tensor([-1, 0], dtype=torch.int32)), ValueError,
                         "n_valid values must be in"),
}


@pytest.mark.parametrize("case", list(BAD) + list(BAD_VALUES))
def test_public_function_rejects_bad_inputs(case):
    change, exc, match = {**BAD, **BAD_VALUES}[case]
    args = _good()
    args.update(change(args))
    with pytest.raises(exc, match=match):
        bottleneck_attention(args["q"], args["k"], args["v"], args["n_valid"], args["n_fusion"])


@pytest.mark.parametrize("backend", BACKENDS + [""])
@pytest.mark.parametrize("case", list(BAD))
def test_registered_op_rejects_bad_inputs(case, backend):
    change, exc, match = BAD[case]
    args = _good()
    args.update(change(args))
    with pytest.raises(exc, match=match):
        torch.ops.zsar.bottleneck_attention(args["q"], args["k"], args["v"], args["n_valid"], args["n_fusion"],
                                            0.25, backend)


@pytest.mark.parametrize("backend", BACKENDS + [""])
def test_registered_backward_rejects_inconsistent_lse(backend):
    a = _good()
    out, lse = torch.ops.zsar.bottleneck_attention(a["q"], a["k"], a["v"], a["n_valid"], a["n_fusion"], 0.25, "")
    with pytest.raises(ValueError, match=r"lse has shape \(0,\)"):
        torch.ops.zsar.bottleneck_attention_backward(out, a["q"], a["k"], a["v"], a["n_valid"], out,
                                                     lse.new_empty(0), a["n_fusion"], 0.25, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_n_valid_is_clamped_alike_by_every_backend(backend, seed):
    device = usable_device(dispatcher, backend)
    q, k, v, _, nf = _inputs(seed, device=device)
    wild = torch.tensor([-5, 100, 4], dtype=torch.int32, device=device)
    clamped = torch.tensor([0, q.shape[2] - nf, 4], dtype=torch.int32, device=device)
    got = bottleneck_attention(q, k, v, wild, nf, backend=backend, check_n_valid=False)
    torch.testing.assert_close(got, bottleneck_attention(q, k, v, clamped, nf, backend="reference"),
                               atol=2e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("cpu", "triton")])
def test_long_sequence_4096(backend, seed):
    """L = 4096 (the kernels' tiling at the longest length DESIGN §2.2 asks for), float32, one sample."""
    skip_unless_usable(dispatcher, backend, "cpu", torch.float32)
    case = Case("L4096", 1, 1, 4096, 64, 4, "mixed")
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(1, 1, case.L, case.D, generator=gen, dtype=torch.float64) for _ in range(4))
    q, k, v, dout = (t.float().double() for t in (q, k, v, dout))
    n_valid = [int(torch.randint(1000, case.L - case.n_fusion + 1, (1,), generator=gen))]
    out, grads = _run(backend, q, k, v, dout, n_valid, case.n_fusion, torch.float32, "cpu")
    ref_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = dense_bottleneck_attention(*ref_leaves, n_valid, case.n_fusion)
    ref.backward(dout)
    _close(out, ref.detach(), torch.float32, "output", seed)
    for name, got, leaf in zip("qkv", grads, ref_leaves):
        _close(got, leaf.grad, torch.float32, f"d{name}", seed)


_ISA_SCRIPT = """
import sys, torch
import zsar._ext as ext
from zsar.ops import bottleneck_attention
torch.manual_seed(0)
worst = 0.0
for B, H, L, D, n_valid, n_fusion in ((4, 2, 140, 64, [124, 125, 120, 0], 4), (1, 1, 300, 40, [296], 4)):
    q, k, v, dout = (torch.randn(B, H, L, D, dtype=torch.float64) for _ in range(4))
    nv = torch.tensor(n_valid, dtype=torch.int32)
    res = []
    for backend, dtype in (("cpu", torch.float32), ("reference", torch.float64)):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out = bottleneck_attention(*leaves, nv, n_fusion, backend=backend)
        out.backward(dout.to(dtype))
        res.append([out.detach().double()] + [t.grad.double() for t in leaves])
    worst = max([worst] + [(a - b).abs().max().item() / (1 + b.abs().max().item()) for a, b in zip(*res)])
print(ext.build_info()["cpu_isa"], worst)
"""


# avx2 by default (the AVX2-only machines' variant, which an AVX-512 host's other tests never run);
# the other tests already run the host's best variant, and baseline (no SIMD) is for other CPUs.
@pytest.mark.parametrize("isa", [pytest.param("baseline", marks=pytest.mark.slow), "avx2",
                                 pytest.param("avx512", marks=pytest.mark.slow)])
def test_cpu_variant_matches_float64_reference(isa):
    """Each kernel variant the build has (the process picks one, capped by ZSAR_CPU_ISA) against the
    float64 reference, output and gradients: the other tests see only the best one of this CPU."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ZSAR_CPU_ISA=isa)
    got = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], env=env, capture_output=True, text=True, check=True)
    ran, worst = got.stdout.split()
    order = ["baseline", "avx2", "avx512"]
    assert order.index(ran) <= order.index(isa)  # lower where the CPU (or the build) lacks the ISA
    assert float(worst) < 2e-4


def test_cpu_variant_setting_is_checked():
    import os
    import subprocess
    import sys

    env = dict(os.environ, ZSAR_CPU_ISA="avx9")
    got = subprocess.run([sys.executable, "-c", "import zsar._ext as e; e.build_info()"], env=env,
                         capture_output=True, text=True)
    assert got.returncode != 0 and "ZSAR_CPU_ISA='avx9': expected baseline, avx2 or avx512" in got.stderr


def test_cpu_autocast_bfloat16_runs_the_fused_kernels(seed):
    # Under CPU autocast a projection gives bfloat16 q, k, v: dispatch picks the cpu backend (its
    # float32 kernels on float32 copies), not the dense reference, and the output and the bfloat16
    # gradients of q, k, v match the float64 computation on the same bfloat16 values.
    from zsar.ops.bottleneck_attention import BottleneckAttentionInputs

    gen = torch.Generator().manual_seed(seed)
    B, H, L, D, n_fusion = 2, 2, 40, 16, 4
    proj = torch.nn.Linear(32, 3 * H * D)
    x = torch.randn(B, L, 32, generator=gen)
    n_valid = [30, 11]
    nv = torch.tensor(n_valid, dtype=torch.int32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = (t.reshape(B, L, H, D).transpose(1, 2).contiguous() for t in proj(x).chunk(3, dim=-1))
        assert q.dtype == torch.bfloat16
        inputs = BottleneckAttentionInputs(q, k, v, nv, n_fusion, D**-0.5)
        assert dispatcher.select(inputs).name == "cpu"
        out = bottleneck_attention(q, k, v, nv, n_fusion)
    assert out.dtype == torch.bfloat16
    dout = torch.randn(out.shape, generator=gen).to(torch.bfloat16)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = dense_bottleneck_attention(*leaves, n_valid, n_fusion)
    _close(out.detach(), ref.detach(), torch.bfloat16, "output", seed)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref_grads = torch.autograd.grad(ref, leaves, dout.double())
    for name, got, want in zip("qkv", grads, ref_grads):
        assert got.dtype == torch.bfloat16
        _close(got, want, torch.bfloat16, f"d{name}", seed)
