"""CPU: zsar's fused masked_attention (cpu backend) vs torch SDPA with the equivalent dense mask.

ResT shape: B=64 clips, H=12 heads, L = 1 CLS + 16 frames + 8 word slots, n_text in 1..8 per
sample, Dh=64, float32. Both sides get identical inputs and use torch's thread count.
Target: forward+backward >= 3x SDPA. Results and the reason for ``--malloc=steady`` (the default of
full runs, see ``conftest.py``) are in ``RESULTS.md``.
Run: ``pytest bench/bench_masked_attention_cpu.py --benchmark-only``; without ``--benchmark-only``
one round at B=2 (see ``benchmode.py``).
"""

from __future__ import annotations

import pytest
import torch

from benchmode import pick
from zsar.ops import masked_attention
from zsar.ops.masked_attention import key_end

B, H, N_VISUAL, MAX_WORDS, D = pick(64, 2), 12, 17, 8, 64
L = N_VISUAL + MAX_WORDS
# Milliseconds per call on a shared 2-core VM: many rounds, so the medians settle.
ROUNDS = dict(rounds=200, warmup=20)


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    n_text = torch.randint(1, MAX_WORDS + 1, (B,), generator=gen, dtype=torch.int32)
    end = key_end(L, N_VISUAL, n_text, full=False)
    mask = torch.arange(L)[None, None, :] < end[:, :, None]
    mask = (mask | (end == 0)[:, :, None])[:, None]  # padding rows: any row, so SDPA stays finite
    return q, k, v, dout, n_text, mask


def _fused(q, k, v, n_text):
    return masked_attention(q, k, v, N_VISUAL, n_text, backend="cpu")


def _sdpa(q, k, v, mask):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_forward_zsar(record, batch):
    q, k, v, _, n_text, _ = batch
    with torch.no_grad():
        record("cpu forward", "zsar cpu", lambda: _fused(q, k, v, n_text), ours=True, **ROUNDS)


def test_forward_sdpa(record, batch):
    q, k, v, _, _, mask = batch
    with torch.no_grad():
        record("cpu forward", "sdpa dense mask", lambda: _sdpa(q, k, v, mask), **ROUNDS)


def _step(attention, leaves, dout):
    """One forward+backward; gradients are dropped first so no contender pays for accumulating them."""
    for t in leaves:
        t.grad = None
    attention(*leaves).backward(dout)


def test_forward_backward_zsar(record, batch):
    q, k, v, dout, n_text, _ = batch
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    record("cpu forward+backward", "zsar cpu", lambda: _step(lambda *a: _fused(*a, n_text), leaves, dout), ours=True, **ROUNDS)


def test_forward_backward_sdpa(record, batch):
    q, k, v, dout, _, mask = batch
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    record("cpu forward+backward", "sdpa dense mask", lambda: _step(lambda *a: _sdpa(*a, mask), leaves, dout), **ROUNDS)


def test_cpu_time_script(monkeypatch, capsys):
    """``cpu_time_masked_attention.py`` (the loaded-machine A/B of two builds) runs: one round of each case."""
    import json
    import sys

    import cpu_time_masked_attention as script

    monkeypatch.setattr(sys, "argv", ["cpu_time_masked_attention.py", "--rounds", "1", "--warmup", "0", "--bottleneck"])
    threads = torch.get_num_threads()
    try:
        script.main()  # sets one thread: thread CPU time covers all the work only then
    finally:
        torch.set_num_threads(threads)
    cases = json.loads(capsys.readouterr().out)
    assert set(cases) == {f"{op} {kind}" for op in ("masked", "bottleneck") for kind in ("forward", "forward+backward")}
    assert all(case["cpu_median_ms"] > 0 for case in cases.values())
