"""CPU: zsar's fused bottleneck_attention (cpu backend, tiled kernels) vs torch SDPA, float32.

Shapes (MZST's streams; ``n_fusion`` = 4 fusion tokens at the end of each sample):

* ``text``: B=8, H=4, L=256, Dh=32, ``n_valid`` drawn in 100..252 per sample;
* ``av 1216``: B=2, H=12, L=1216, Dh=64, ``n_valid`` 1212 / 1200;
* ``av 400``: B=2, H=12, L=400, Dh=64, ``n_valid`` 392 for both;
* ``av 1609``: B=2, H=12, L=1609, Dh=64, ``n_valid`` 1605 / 393 (one sample without audio);
* ``long 4096``: B=1, H=8, L=4096, Dh=64, ``n_valid`` 4092;
* ``dense quarter pad`` (L, Dh) in (64, 32), (1024, 64), (2048, 128), (4096, 32), (8192, 64) (H=4;
  H=2 at L=8192): a quarter of the batch (B=4) is padding (one sample with ``n_valid`` = 0, one
  half padding); the peer is SDPA with the dense (B, 1, L, L) mask;
* ``bf16``: ``av 400`` and ``dense quarter pad L=1024 Dh=64`` with bfloat16 inputs (as under CPU
  autocast): zsar runs its float32 kernels on float32 copies, SDPA its own bfloat16 path (AMX or
  AVX-512-BF16 where the CPU has them).

SDPA gets the equivalent boolean key mask (B, 1, 1, L) (precomputed, not timed); its padding rows
attend every key so they stay finite, ours are exact zeros. Every ratio comes from one process:
the two contenders alternate call by call, the order flipped each pair, so both see the same load;
ratio = SDPA time / zsar time per pair, median (min-max) over the pairs (at least 7; short calls
pair on for a second, and their min-max is over the medians of 7 blocks of pairs: ``benchmode.summary``);
``uptime``'s load is printed beside each line, with how zsar's threads share the call (an OpenMP
team, or its own pool with ``OMP_WAIT_POLICY=passive``; ``ZSAR_THREADING`` overrides). Results and the settings measured
are in ``RESULTS.md``.

The zsar kernels run the best variant the processor has (``zsar info``: avx512 / avx2 /
baseline). What an AVX2-only machine runs, on an AVX-512 one: ``ZSAR_CPU_ISA=avx2
ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`` (both contenders
restricted).

Run: ``pytest bench/bench_bottleneck_attention_cpu.py --benchmark-only -s`` (full sizes); without
``--benchmark-only`` every case runs once at a tiny size (see ``benchmode.py``).
"""

from __future__ import annotations

import pytest
import torch

from benchmode import full, interleaved, pick, report_line, summary
from zsar.ops import bottleneck_attention

N_FUSION = 4
PAIRS = pick(7, 1)
# Short calls pair on for this long (L=64: ~1000 pairs), so their medians hold still; the quick run
# pairs on briefly, so that it goes through the same code (many pairs, spread over block medians).
MIN_SECONDS = pick(1.0, 0.01)


def _n_valid(spec, B, L, gen):
    if spec == "random":
        return torch.randint(min(100, L - N_FUSION), L - N_FUSION + 1, (B,), generator=gen, dtype=torch.int32)
    return torch.tensor(spec, dtype=torch.int32)


# name: (B, H, L, Dh, n_valid, dense peer mask[, dtype])
CASES = pick({
    "text": (8, 4, 256, 32, "random", False),
    "av 1216": (2, 12, 1216, 64, [1212, 1200], False),
    "av 400": (2, 12, 400, 64, [392, 392], False),
    "av 1609": (2, 12, 1609, 64, [1605, 393], False),
    "long 4096": (1, 8, 4096, 64, [4092], False),
    **{f"dense quarter pad L={L} Dh={D}": (4, H, L, D, [L - N_FUSION, L - N_FUSION, L // 2, 0], True)
       for L, D, H in ((64, 32, 4), (1024, 64, 4), (2048, 128, 4), (4096, 32, 4), (8192, 64, 2))},
    "av 400 bf16": (2, 12, 400, 64, [392, 392], False, torch.bfloat16),
    "dense quarter pad L=1024 Dh=64 bf16": (4, 4, 1024, 64, [1020, 1020, 512, 0], True, torch.bfloat16),
}, {
    "text": (2, 2, 40, 32, "random", False),
    "dense quarter pad": (4, 1, 24, 16, [20, 20, 10, 0], True),
    "text bf16": (2, 2, 40, 32, "random", False, torch.bfloat16),
})
# Agreement of the contenders in the quick run, per input dtype (bfloat16: both round their outputs).
AGREEMENT = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def _inputs(B, H, L, D, n_valid_spec, dense, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen).to(dtype) for _ in range(4))
    n_valid = _n_valid(n_valid_spec, B, L, gen)
    pos = torch.arange(L)
    valid = (pos[None, :] < n_valid[:, None]) | (pos[None, :] >= L - N_FUSION)  # (B, L)
    if dense:  # valid query x valid key; padding rows see everything (finite, like the key mask)
        mask = (valid[:, :, None] & valid[:, None, :]) | ~valid[:, :, None]
        mask = mask[:, None]
    else:
        mask = valid[:, None, None, :]
    return q, k, v, dout, n_valid, mask


def _step(attention, leaves, dout):
    """One forward+backward; gradients are dropped first so no contender pays for accumulating them."""
    for t in leaves:
        t.grad = None
    attention(*leaves).backward(dout)


@pytest.mark.parametrize("case", list(CASES))
def test_interleaved(benchmark, case):
    B, H, L, D, spec, dense, *dtype = CASES[case]
    q, k, v, dout, n_valid, mask = _inputs(B, H, L, D, spec, dense, *dtype)
    fused = lambda q, k, v: bottleneck_attention(q, k, v, n_valid, N_FUSION, backend="cpu")  # noqa: E731
    sdpa = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    if not full():  # the quick run checks that the contenders agree on the valid rows
        pos = torch.arange(L)
        rows = ((pos[None, :] < n_valid[:, None]) | (pos[None, :] >= L - N_FUSION))[:, None, :, None]
        tol = AGREEMENT[q.dtype]
        torch.testing.assert_close(fused(q, k, v) * rows, sdpa(q, k, v) * rows, atol=tol, rtol=tol)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    peer = "sdpa dense mask" if dense else "sdpa key mask"
    lines = []
    with torch.no_grad():
        fwd = summary(*interleaved(lambda: fused(q, k, v), lambda: sdpa(q, k, v), PAIRS, min_seconds=MIN_SECONDS))
    fwd_bwd = summary(*interleaved(lambda: _step(fused, leaves, dout), lambda: _step(sdpa, leaves, dout), PAIRS,
                                       min_seconds=MIN_SECONDS))
    for group, s in (("forward", fwd), ("forward+backward", fwd_bwd)):
        benchmark.extra_info[group] = s
        lines.append(report_line(f"{case} {group}", peer, "zsar cpu", s))
    benchmark.pedantic(lambda: None, rounds=1)
    print("\n" + "\n".join(lines))
