"""masked_attention as a torch citizen: opcheck, torch.compile, FlopCounterMode, autograd details."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dense_reference import allowed_mask, dense_attention
from ops_params import backend_names, usable_device
from zsar.ops import masked_attention
from zsar.ops.masked_attention import dispatcher


def _inputs(seed, B=3, H=2, L=13, D=32, n_visual=5, dtype=torch.float32, requires_grad=False, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, generator=gen, dtype=dtype).to(device).requires_grad_(requires_grad)
               for _ in range(3))
    n_text = torch.randint(0, L - n_visual + 1, (B,), generator=gen, dtype=torch.int32)
    n_text[0] = 0
    return q, k, v, n_visual, n_text.to(device)


# The device of each backend comes from its declarations (triton: cuda when there is a GPU, else
# cpu under the interpreter), so these run on GPU machines too.
@pytest.mark.parametrize("backend", backend_names(dispatcher))
@pytest.mark.parametrize("full", [False, True])
def test_opcheck(backend, full, seed):
    q, k, v, nv, nt = _inputs(seed, requires_grad=True, device=usable_device(dispatcher, backend))
    torch.library.opcheck(torch.ops.zsar.masked_attention.default, (q, k, v, nt, nv, full, 0.2, backend))


def test_torch_compile_fullgraph_matches_eager(seed):
    q, k, v, nv, nt = _inputs(seed, requires_grad=True)

    def block(q, k, v, nt):
        return (masked_attention(q, k, v, nv, nt) * 2.0).sum(-1)

    compiled = torch.compile(block, fullgraph=True)
    out = compiled(q, k, v, nt)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_out = block(q, k, v, nt)
    ref_grads = torch.autograd.grad(ref_out.sum(), (q, k, v))
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def _expected_pairs(n_visual, n_text, full):
    mask = allowed_mask(len(n_text), n_visual + max(n_text) + 1, n_visual, n_text, "full" if full else "rest")
    return int(mask.sum())


@pytest.mark.parametrize("full", [False, True])
def test_flop_counter_counts_exact_attended_pairs(full, seed):
    q, k, v, nv, nt = _inputs(seed, requires_grad=True)
    B, H, L, D = q.shape
    pairs = _expected_pairs(nv, nt.tolist(), full)
    with FlopCounterMode(display=False) as counter:
        out = masked_attention(q, k, v, nv, nt, mode="full" if full else "rest")
        out.sum().backward()
    counts = counter.get_flop_counts()["Global"]
    assert counts[torch.ops.zsar.masked_attention] == 2 * 2 * H * D * pairs
    assert counts[torch.ops.zsar.masked_attention_backward] == 5 * 2 * H * D * pairs


def test_flop_counter_on_meta_tensors_assumes_full_text():
    B, H, L, D, nv = 2, 4, 25, 64, 17
    q = torch.empty(B, H, L, D, device="meta")
    nt = torch.empty(B, dtype=torch.int32, device="meta")
    with FlopCounterMode(display=False) as counter:
        torch.ops.zsar.masked_attention(q, q, q, nt, nv, False, 0.125, "")
    pairs = B * _expected_pairs(nv, [L - nv], False)
    assert counter.get_total_flops() == 2 * 2 * H * D * pairs


def test_outputs_do_not_alias_inputs(seed):
    q, k, v, nv, nt = _inputs(seed)
    out = masked_attention(q, k, v, nv, nt)
    assert out.data_ptr() not in {t.data_ptr() for t in (q, k, v)}


def test_non_contiguous_upstream_gradient(seed):
    """The backward accepts a transposed/strided dout (e.g. from a permute downstream)."""
    q, k, v, nv, nt = _inputs(seed, dtype=torch.float64, requires_grad=True)
    out = masked_attention(q, k, v, nv, nt)
    gen = torch.Generator().manual_seed(seed + 7)
    dout = torch.randn(out.shape[::-1], generator=gen, dtype=out.dtype).permute(3, 2, 1, 0)
    assert not dout.is_contiguous()
    got = torch.autograd.grad(out, (q, k, v), dout)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = dense_attention(*leaves, nv, nt.tolist())
    expected = torch.autograd.grad(ref, leaves, dout)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_gradcheck_cpu_float64(seed):
    q, k, v, nv, nt = _inputs(seed, B=2, H=1, L=7, D=5, n_visual=3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v: masked_attention(q, k, v, nv, nt, backend="cpu"), (q, k, v))


@pytest.mark.parametrize("backend", backend_names(dispatcher))
@pytest.mark.parametrize("full", [False, True])
def test_eager_path_matches_custom_op(backend, full, seed):
    """Plain eager calls bypass the custom-op layers (less Python per call); they must give the op's
    results bit for bit, outputs and gradients."""
    device = usable_device(dispatcher, backend)
    q, k, v, nv, nt = _inputs(seed, requires_grad=True, device=device)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    out = masked_attention(q, k, v, nv, nt, mode="full" if full else "rest", scale=0.2, backend=backend)
    assert type(out.grad_fn).__name__ == "_EagerAttentionBackward"
    grads = torch.autograd.grad(out, (q, k, v), dout)
    op_out, _ = torch.ops.zsar.masked_attention(q, k, v, nt, nv, full, 0.2, backend)
    assert "_EagerMaskedAttention" not in type(op_out.grad_fn).__name__
    op_grads = torch.autograd.grad(op_out, (q, k, v), dout)
    assert torch.equal(out, op_out)
    for g, r in zip(grads, op_grads):
        assert torch.equal(g, r)


def test_modes_and_subclasses_take_the_custom_op(seed):
    """Under a dispatch mode (here FlopCounterMode) the op itself must run, so the mode sees it."""
    q, k, v, nv, nt = _inputs(seed, requires_grad=True)
    with FlopCounterMode(display=False):
        out = masked_attention(q, k, v, nv, nt)
    assert "_EagerMaskedAttention" not in type(out.grad_fn).__name__


# torch.jit.trace is deprecated (FutureWarning) and warns on every shape check it cannot record.
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_records_the_custom_op(seed):
    """A traced graph names zsar::masked_attention (serialisable), not a Python autograd.Function."""
    q, k, v, nv, nt = _inputs(seed)
    traced = torch.jit.trace(lambda q, k, v: masked_attention(q, k, v, nv, nt, check_n_text=False), (q, k, v))
    assert "zsar::masked_attention" in str(traced.graph)
    q2 = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1))
    torch.testing.assert_close(traced(q2, k, v), masked_attention(q2, k, v, nv, nt))
