"""masked_attention: every backend runnable here against the independent float64 reference."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from dense_reference import dense_attention
from ops_params import declared_backend_params, skip_unless_usable
from zsar.ops import BackendUnavailableError, masked_attention
from zsar.ops.masked_attention import MaskedAttentionInputs, dispatcher


@dataclass(frozen=True)
class Case:
    id: str
    B: int
    H: int
    L: int
    D: int
    n_visual: int
    words: str  # "zero" | "max" | "mixed"
    mode: str = "rest"

    def n_text(self, gen: torch.Generator) -> list[int]:
        hi = self.L - self.n_visual
        if self.words == "zero":
            return [0] * self.B
        if self.words == "max":
            return [hi] * self.B
        counts = torch.randint(0, hi + 1, (self.B,), generator=gen).tolist()
        counts[0] = 0  # always include both extremes beside random counts
        if self.B > 1:
            counts[1] = hi
        return counts


CASES = [
    Case("no_words", 3, 2, 12, 32, 5, "zero"),
    Case("all_words", 2, 2, 12, 64, 5, "max"),
    Case("rest_L25_d64", 4, 2, 25, 64, 17, "mixed"),
    Case("odd_L_d80", 3, 2, 21, 80, 9, "mixed"),
    Case("d128", 2, 1, 19, 128, 6, "mixed"),
    Case("odd_head_dim", 3, 1, 10, 17, 3, "mixed"),
    Case("batch1", 1, 3, 13, 32, 4, "mixed"),
    Case("one_frame", 3, 2, 7, 32, 2, "mixed"),
    Case("no_word_slots", 2, 2, 6, 32, 6, "max"),
    Case("single_token", 2, 1, 1, 32, 1, "max"),
    Case("long_L", 2, 1, 70, 64, 17, "mixed"),
    Case("full_L25", 3, 2, 25, 64, 17, "mixed", "full"),
    Case("full_odd", 2, 2, 11, 80, 3, "mixed", "full"),
]

# (atol, rtol) per dtype for outputs and gradients against float64
TOLERANCE = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (5e-5, 2e-4),
    torch.float16: (4e-3, 2e-2),
    torch.bfloat16: (3e-2, 5e-2),
}

def _make_inputs(case: Case, seed: int, dtype: torch.dtype, device: torch.device):
    gen = torch.Generator().manual_seed(seed)
    shape = (case.B, case.H, case.L, case.D)
    q, k, v, dout = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4))
    # Round to the tested dtype first, so the reference sees exactly the values the backend sees.
    q, k, v, dout = (t.to(dtype).to(torch.float64) for t in (q, k, v, dout))
    return q, k, v, dout, case.n_text(gen)


def _run(backend, q, k, v, dout, n_text, case, dtype, device):
    leaves = [t.to(device=device, dtype=dtype, copy=True).requires_grad_() for t in (q, k, v)]
    nt = torch.tensor(n_text, dtype=torch.int32, device=device)
    out = masked_attention(*leaves, case.n_visual, nt, mode=case.mode, backend=backend)
    out.backward(dout.to(device=device, dtype=dtype))
    return out.detach(), [t.grad for t in leaves]


def _close(actual, expected, dtype, what, seed):
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(
        actual.double().cpu(), expected, atol=atol, rtol=rtol, msg=lambda m: f"{what} (seed {seed}): {m}"
    )


# Every (backend, device, dtype) that a backend declares (zsar.ops._backend.Support entries).
BACKEND_PARAMS = declared_backend_params(dispatcher)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("backend,device,dtype", BACKEND_PARAMS)
def test_matches_dense_reference(backend, device, dtype, case, seed):
    skip_unless_usable(dispatcher, backend, device, dtype)
    q, k, v, dout, n_text = _make_inputs(case, seed, dtype, device)

    out, (dq, dk, dv) = _run(backend, q, k, v, dout, n_text, case, dtype, device)

    ref_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = dense_attention(*ref_leaves, case.n_visual, n_text, case.mode)
    ref.backward(dout)
    assert out.dtype == dtype and out.shape == q.shape
    _close(out, ref.detach(), dtype, "output", seed)
    for name, got, leaf in zip("qkv", (dq, dk, dv), ref_leaves):
        _close(got, leaf.grad, dtype, f"d{name}", seed)

    # Padding query rows are exactly 0 and get exactly 0 gradient; unattended keys get none either.
    for b, n in enumerate(n_text):
        n_valid = case.n_visual + n
        assert torch.all(out[b, :, n_valid:] == 0)
        assert torch.all(dq[b, :, n_valid:] == 0)
        assert torch.all(dk[b, :, n_valid:] == 0) and torch.all(dv[b, :, n_valid:] == 0)


# >= 4 MiB per output tensor (56 * 12 * 25 * 64 floats): the cpu backend's float32 path writes such
# outputs with streaming stores (csrc/cpu/prefix_attention.cpp, kStreamBytes).
STREAM_CASE = Case("streamed_outputs", 56, 12, 25, 64, 17, "mixed")


def test_cpu_streamed_outputs_match_dense_reference(seed):
    test_matches_dense_reference("cpu", torch.device("cpu"), torch.float32, STREAM_CASE, seed)


def test_cpu_streamed_and_cached_stores_give_identical_bits(seed):
    """The same kernels with outputs at a misaligned address (no streaming stores possible) write
    exactly the values the streamed, aligned call writes: forward and backward."""
    from zsar import _ext
    from zsar.ops.attention import compiled

    case = STREAM_CASE
    q, k, v, dout, n_text = (t.float() if isinstance(t, torch.Tensor) else t
                             for t in _make_inputs(case, seed, torch.float32, torch.device("cpu")))
    nt = torch.tensor(n_text, dtype=torch.int32)
    problem = compiled.problem(MaskedAttentionInputs(q, k, v, nt, case.n_visual, False, case.D ** -0.5))
    core = _ext.compiled()

    def run(offset):
        bufs = [torch.empty(q.numel() + offset)[offset:].view(q.shape) for _ in range(4)]  # out, dq, dk, dv
        out, dq, dk, dv = bufs
        lse = torch.empty(q.shape[:3])
        core.attention_forward_cpu(core.AttentionForward(
            problem, lengths=nt.data_ptr(), q=q.data_ptr(), k=k.data_ptr(), v=v.data_ptr(), out=out.data_ptr(),
            lse=lse.data_ptr(), num_threads=2))
        core.attention_backward_cpu(core.AttentionBackward(
            problem, lengths=nt.data_ptr(), q=q.data_ptr(), k=k.data_ptr(), v=v.data_ptr(), out=out.data_ptr(),
            lse=lse.data_ptr(), dout=dout.data_ptr(), dq=dq.data_ptr(), dk=dk.data_ptr(), dv=dv.data_ptr(),
            num_threads=2))
        return bufs

    assert torch.empty(1).data_ptr() % 32 == 0  # torch's CPU allocations are 64-byte aligned
    for streamed, cached in zip(run(0), run(1)):
        assert streamed.data_ptr() % 32 == 0 and cached.data_ptr() % 32 != 0
        assert torch.equal(streamed, cached)


VISUAL_CASE = Case("visual", 3, 2, 25, 64, 17, "mixed")


@pytest.mark.parametrize("backend,device,dtype", [p for p in BACKEND_PARAMS if p.values[2] == torch.float32])
def test_visual_outputs_ignore_words(backend, device, dtype, seed):
    """CLS and frame outputs are bit-identical when word tokens change, and send words no gradient."""
    skip_unless_usable(dispatcher, backend, device, dtype)
    case = VISUAL_CASE
    q, k, v, dout, n_text = _make_inputs(case, seed, dtype, device)
    gen = torch.Generator().manual_seed(seed + 1)
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    for t in (q2, k2, v2):
        t[:, :, case.n_visual:] = torch.randn(t[:, :, case.n_visual:].shape, generator=gen, dtype=t.dtype)

    dout_visual = dout.clone()
    dout_visual[:, :, case.n_visual:] = 0
    out1, (_, dk, dv) = _run(backend, q, k, v, dout_visual, n_text, case, dtype, device)
    out2, _ = _run(backend, q2, k2, v2, dout_visual, n_text, case, dtype, device)
    assert torch.equal(out1[:, :, : case.n_visual], out2[:, :, : case.n_visual])
    assert torch.all(dk[:, :, case.n_visual:] == 0) and torch.all(dv[:, :, case.n_visual:] == 0)


def test_mode_full_differs_from_rest(seed):
    """Guards against a backend ignoring `mode`: with words present the two patterns disagree."""
    case = VISUAL_CASE
    q, k, v, _, _ = _make_inputs(case, seed, torch.float32, torch.device("cpu"))
    q, k, v = (t.float() for t in (q, k, v))
    n_text = torch.full((case.B,), 5, dtype=torch.int32)
    rest = masked_attention(q, k, v, case.n_visual, n_text, mode="rest")
    full = masked_attention(q, k, v, case.n_visual, n_text, mode="full")
    assert not torch.allclose(rest[:, :, 0], full[:, :, 0])


def test_default_scale_is_inverse_sqrt_head_dim(seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, 9, 32, generator=gen) for _ in range(3))
    n_text = torch.tensor([2, 4], dtype=torch.int32)
    torch.testing.assert_close(
        masked_attention(q, k, v, 5, n_text), masked_attention(q, k, v, 5, n_text, scale=32**-0.5)
    )
    assert not torch.allclose(masked_attention(q, k, v, 5, n_text), masked_attention(q, k, v, 5, n_text, scale=1.0))


# ---- dispatch -------------------------------------------------------------------------------------


def _small(dtype=torch.float32, device="cpu"):
    q = torch.randn(2, 2, 8, 16, dtype=dtype, device=device)
    return q, q.clone(), q.clone(), 3, torch.tensor([1, 5], dtype=torch.int32, device=device)


def test_auto_dispatch_picks_fastest_usable():
    q, k, v, nv, nt = _small()
    inp = MaskedAttentionInputs(q, k, v, nt, nv, False, 0.25)
    assert dispatcher.select(inp).name == "cpu"
    # 16-bit floats on the CPU: the cpu backend's float32 kernels, before the Triton interpreter and
    # the dense reference.
    for dtype in (torch.float16, torch.bfloat16):
        inp16 = MaskedAttentionInputs(q.to(dtype), k.to(dtype), v.to(dtype), nt, nv, False, 0.25)
        assert dispatcher.select(inp16).name == "cpu"


def test_forced_backend_that_cannot_serve_lists_every_backend():
    q, k, v, nv, nt = _small()
    with pytest.raises(BackendUnavailableError) as info:
        masked_attention(q, k, v, nv, nt, backend="cuda")
    message = str(info.value)
    for name in dispatcher.names:
        assert f"  {name}: " in message
    assert "cuda" in message and ("CUDA" in message or "cuda" in message)


def test_unknown_backend_name():
    q, k, v, nv, nt = _small()
    with pytest.raises(ValueError, match="backend='nope'"):
        masked_attention(q, k, v, nv, nt, backend="nope")


# ---- bad input --------------------------------------------------------------------------------------


def _bad(**changes):
    q, k, v, nv, nt = _small()
    args = dict(q=q, k=k, v=v, n_visual=nv, n_text=nt)
    args.update(changes)
    return args


BAD_INPUTS = [
    ("rank", _bad(q=torch.randn(2, 8, 16)), ValueError, "q must have shape"),
    ("shape", _bad(k=torch.randn(2, 2, 9, 16)), ValueError, "k has shape"),
    ("dtype", _bad(v=torch.randn(2, 2, 8, 16, dtype=torch.float64)), TypeError, "v has dtype"),
    ("int_tensor", _bad(q=torch.ones(2, 2, 8, 16, dtype=torch.int64)), TypeError, "q must be a floating"),
    ("device", _bad(k=torch.randn(2, 2, 8, 16, device="meta")), ValueError, "k is on meta"),
    ("not_tensor", _bad(q=[[1.0]]), TypeError, "q must be a torch.Tensor"),
    ("non_contiguous", _bad(q=torch.randn(2, 8, 2, 16).transpose(1, 2)), ValueError, "q must be contiguous"),
    ("zero_size", _bad(q=torch.randn(0, 2, 8, 16), k=torch.randn(0, 2, 8, 16), v=torch.randn(0, 2, 8, 16),
                       n_text=torch.zeros(0, dtype=torch.int32)), ValueError, "must not be empty"),
    ("n_text_dtype", _bad(n_text=torch.tensor([1, 2])), TypeError, "n_text must have dtype torch.int32"),
    ("n_text_float", _bad(n_text=torch.tensor([1.0, 2.0])), TypeError, "n_text must have dtype"),
    ("n_text_list", _bad(n_text=[1, 2]), TypeError, "n_text must be an int32 tensor"),
    ("n_text_length", _bad(n_text=torch.tensor([1, 2, 3], dtype=torch.int32)), ValueError, r"n_text must have shape \(2,\)"),
    ("n_text_too_big", _bad(n_text=torch.tensor([1, 6], dtype=torch.int32)), ValueError, r"n_text values must be in \[0, L - n_visual = 5\]"),
    ("n_text_negative", _bad(n_text=torch.tensor([-1, 2], dtype=torch.int32)), ValueError, "n_text values"),
    ("n_visual_zero", _bad(n_visual=0), ValueError, r"n_visual must be in \[1, L=8\]"),
    ("n_visual_too_big", _bad(n_visual=9), ValueError, "n_visual must be in"),
    ("n_visual_type", _bad(n_visual=2.0), TypeError, "n_visual must be an int"),
]


@pytest.mark.parametrize("args,exc,match", [pytest.param(*c[1:], id=c[0]) for c in BAD_INPUTS])
def test_bad_inputs_raise_clear_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        masked_attention(**args)


def test_bad_mode_and_scale():
    q, k, v, nv, nt = _small()
    with pytest.raises(ValueError, match="mode must be one of"):
        masked_attention(q, k, v, nv, nt, mode="causal")
    with pytest.raises(ValueError, match="scale must be a finite number"):
        masked_attention(q, k, v, nv, nt, scale=float("nan"))
