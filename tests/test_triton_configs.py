"""Every tile shape the GPU autotuner may pick for the Triton attention kernels gives the float64
reference's results, run here in the Triton interpreter with the tiles forced: query and key tiles
of different lengths, several tiles per sequence and a tile longer than it, for each mask kind."""

from __future__ import annotations

import pytest
import torch

from zsar.ops import bottleneck_attention, masked_attention
from zsar.ops.attention import backend_triton
from zsar.ops.masked_attention import dispatcher

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.skipif(dispatcher.get("triton").usable_device(torch.float32) is None,
                       reason="Triton cannot run here"),
]

# By default the shapes the heuristic config (16 x 16, covered by every Triton test) does not
# exercise: unequal query and key tiles both ways; all of them (tiles longer than L too) in -m slow.
_DEFAULT = {(32, 64), (64, 32)}
TILES = [pytest.param(m, n, marks=() if (m, n) in _DEFAULT else pytest.mark.slow)
         for m, n in sorted({(m, n) for m, n, _, _ in
                             backend_triton.FWD_CONFIGS + backend_triton.DKDV_CONFIGS + backend_triton.DQ_CONFIGS})]


def _check(call, B, H, L, D, seed):
    device = dispatcher.get("triton").usable_device(torch.float32)
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen, dtype=torch.float64) for _ in range(4))
    results = []
    for backend, dtype in (("triton", torch.float32), ("reference", torch.float64)):
        leaves = [t.to(device, dtype).requires_grad_() for t in (q, k, v)]
        out = call(*leaves, backend)
        out.backward(dout.to(device, dtype))
        results.append([out.detach()] + [t.grad for t in leaves])
    for name, got, want in zip(("out", "dq", "dk", "dv"), *results):
        torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=2e-4, msg=name)


@pytest.mark.parametrize("block_m,block_n", TILES)
def test_forced_tiles_match_reference(block_m, block_n, seed):
    n_text = torch.tensor([23, 0, 11], dtype=torch.int32)
    n_valid = torch.tensor([60, 0, 31], dtype=torch.int32)
    with backend_triton.forced_tiles((block_m, block_n, 4, 2)):
        for mode in ("rest", "full"):
            _check(lambda q, k, v, b: masked_attention(q, k, v, 5, n_text.to(q.device), mode=mode, backend=b),
                   3, 1, 40, 16, seed)
        _check(lambda q, k, v, b: bottleneck_attention(q, k, v, n_valid.to(q.device), 3, backend=b),
               3, 1, 70, 16, seed)


def test_prune_keeps_tiles_within_the_sequence():
    def tiles(configs, L, D):
        configs = [backend_triton.triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
                   for m, n, w, s in configs]
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) for c in backend_triton._prune(configs, {"L": L, "D": D})}

    for configs in (backend_triton.FWD_CONFIGS, backend_triton.DKDV_CONFIGS, backend_triton.DQ_CONFIGS):
        assert {(m, n) for m, n, _ in tiles(configs, 25, 64)} == {(16, 16), (32, 32)}  # ResT
        long = tiles(configs, 1609, 64)  # MZST: three FA2 tiles
        assert len(long) == 3 and all(max(m, n) >= 64 for m, n, _ in long)
        assert all(w == 8 for m, n, w in tiles(configs, 1609, 128) if max(m, n) >= 64)
        assert len(tiles(configs[2:], 8, 64)) == 1  # never empty
