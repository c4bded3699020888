"""CPU: zsar's fused bottleneck_attention (cpu backend, tiled kernels) vs torch SDPA with a boolean
key mask.

Shape: B=8, H=4, L=256 with ``n_valid`` drawn in 100..252 per sample, ``n_fusion``=4,
Dh=32, float32. SDPA gets the equivalent (B, 1, 1, L) boolean key mask (precomputed, not timed);
its padding rows attend every key (so they stay finite), ours are exact zeros. Both sides get
identical inputs and torch's thread count. Target: forward+backward >= 2x SDPA. Results in
``RESULTS.md``.
Run: ``pytest bench/bench_bottleneck_attention_cpu.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch

from zsar.ops import bottleneck_attention

B, H, L, D, N_FUSION = 8, 4, 256, 32, 4
ROUNDS = dict(rounds=100, warmup=10)


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    n_valid = torch.randint(100, 253, (B,), generator=gen, dtype=torch.int32)
    pos = torch.arange(L)
    keys = (pos[None, :] < n_valid[:, None]) | (pos[None, :] >= L - N_FUSION)
    return q, k, v, dout, n_valid, keys[:, None, None, :]


def _fused(q, k, v, n_valid):
    return bottleneck_attention(q, k, v, n_valid, N_FUSION, backend="cpu")


def _sdpa(q, k, v, mask):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _step(attention, leaves, dout):
    """One forward+backward; gradients are dropped first so no contender pays for accumulating them."""
    for t in leaves:
        t.grad = None
    attention(*leaves).backward(dout)


def test_forward_zsar(record, batch):
    q, k, v, _, n_valid, _ = batch
    with torch.no_grad():
        record("bottleneck cpu forward", "zsar cpu", lambda: _fused(q, k, v, n_valid), ours=True, **ROUNDS)


def test_forward_sdpa(record, batch):
    q, k, v, _, _, mask = batch
    with torch.no_grad():
        record("bottleneck cpu forward", "sdpa key mask", lambda: _sdpa(q, k, v, mask), **ROUNDS)


def test_forward_backward_zsar(record, batch):
    q, k, v, dout, n_valid, _ = batch
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    record("bottleneck cpu forward+backward", "zsar cpu",
           lambda: _step(lambda *a: _fused(*a, n_valid), leaves, dout), ours=True, **ROUNDS)


def test_forward_backward_sdpa(record, batch):
    q, k, v, dout, _, mask = batch
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    record("bottleneck cpu forward+backward", "sdpa key mask",
           lambda: _step(lambda *a: _sdpa(*a, mask), leaves, dout), **ROUNDS)


def test_interleaved_ratios(benchmark, batch):
    """One call of each contender per round, alternating, 100 rounds: on a shared, loaded machine
    both see the same load, so the ratio of medians is steadier than that of separate runs."""
    import statistics
    import time

    q, k, v, dout, n_valid, mask = batch
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    contenders = {
        "forward": (lambda: _fused(q, k, v, n_valid), lambda: _sdpa(q, k, v, mask)),
        "forward+backward": (lambda: _step(lambda *a: _fused(*a, n_valid), leaves, dout),
                             lambda: _step(lambda *a: _sdpa(*a, mask), leaves, dout)),
    }
    lines = []
    for group, (ours, peer) in contenders.items():
        times = {"zsar": [], "sdpa": []}
        grad = torch.enable_grad() if group == "forward+backward" else torch.no_grad()
        with grad:
            for _ in range(10):
                ours(), peer()
            for _ in range(100):
                for name, fn in (("zsar", ours), ("sdpa", peer)):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
        z, s = statistics.median(times["zsar"]), statistics.median(times["sdpa"])
        benchmark.extra_info[group] = dict(zsar_ms=z * 1e3, sdpa_ms=s * 1e3, ratio=s / z)
        lines.append(f"interleaved {group}: sdpa key mask {s * 1e3:.2f} ms / zsar cpu {z * 1e3:.2f} ms = {s / z:.2f}x")
    benchmark.pedantic(lambda: None, rounds=1)
    print("\n" + "\n".join(lines))
