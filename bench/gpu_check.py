"""GPU check of masked_attention and bottleneck_attention: correctness of the CUDA and Triton
backends, then timings.

Run on a machine with a CUDA GPU, after `pip install .` (nvcc present, so the CUDA kernels build):

    python bench/gpu_check.py [--json results.json]

1. Build: zsar._C must have been compiled with CUDA.
2. Correctness: every backend that declares cuda (today cuda and triton; the list and the dtypes
   come from the backends' declarations) against the float64 torch reference (forward output and
   dq/dk/dv; padding rows exactly 0), over ResT-like and edge-case shapes, rest and full modes.
3. The op tests (tests/test_masked_attention*.py, tests/test_ops_*.py): on a GPU machine they run
   the cuda and triton backends on CUDA tensors (non-finite inputs, direct calls of the registered
   ops, opcheck, eager path). Skip with --no-tests.
4. Timing at ResT shapes (B=256, H=12, L=1+16+8, Dh=64, bf16; n_text in 1..8): forward and
   forward+backward of zsar cuda / zsar triton / torch SDPA with a dense boolean mask / compiled
   FlexAttention with a mask_mod for the same pattern. Prints one table with ratios.
5. bottleneck_attention (MZST's fusion, DESIGN §2.2), bf16, MZST shapes: audio-video stream B=32, H=12, L=1609,
   Dh=64, n_fusion=4, (a) no padding, (b) half the batch without audio (n_valid=393); text stream
   B=256, H=12, L=21, n_valid in 2..17 (n_fusion=4). Contenders: zsar cuda, zsar triton, SDPA with
   a boolean key mask, SDPA on unpadded tensors without a mask (case a: the whole batch; case b:
   each half on its own valid tokens; not applicable to the text stream's per-sample lengths) and
   compiled FlexAttention with a mask_mod. One table: forward and forward+backward ms, ratios to
   zsar cuda and the achieved TFLOP/s (valid query-key pairs only: 4 H Dh pairs forward, 14
   forward+backward). Targets: (a) within 10% of SDPA unpadded, (b) >= 2x SDPA with a mask, text
   >= 3x SDPA with a mask, every case >= 1.3x FlexAttention, Triton within 1.3x of CUDA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from zsar import _ext
from zsar.ops import bottleneck_attention
from zsar.ops.masked_attention import dispatcher, key_end, masked_attention

TOL = {torch.float32: (2e-4, 2e-4), torch.float16: (4e-3, 2e-2), torch.bfloat16: (3e-2, 5e-2)}  # (atol, rtol) vs float64
CHECK_SHAPES = [  # B, H, L, Dh, n_visual, mode
    (4, 3, 25, 64, 17, "rest"),
    (2, 2, 25, 64, 17, "full"),
    (3, 2, 9, 32, 9, "rest"),  # no word slots
    (1, 2, 7, 80, 2, "rest"),  # one frame, odd L, head dim 80
    (2, 1, 70, 128, 17, "rest"),  # L over several tiles, head dim 128
    (3, 2, 130, 17, 33, "full"),  # odd head dim, L > 128
]


def gpu_backends() -> list[tuple[str, torch.dtype]]:
    """(backend, dtype) for every non-reference backend that declares cuda tensors of that dtype."""
    return [(b.name, dtype) for b in dispatcher.backends if b.name != "reference"
            for device, dtype in b.declared() if device == "cuda"]


def check_correctness(device, backends: list[tuple[str, torch.dtype]] | None = None) -> list[dict]:
    """Each (backend, dtype) (default: :func:`gpu_backends`) against the float64 reference."""
    rows = []
    for backend, dtype in gpu_backends() if backends is None else backends:
        for B, H, L, D, nv, mode in CHECK_SHAPES:
            gen = torch.Generator().manual_seed(B * 1000 + L)
            q, k, v, dout = (torch.randn(B, H, L, D, generator=gen).to(dtype) for _ in range(4))
            n_text = torch.randint(0, L - nv + 1, (B,), generator=gen, dtype=torch.int32)
            n_text[0] = L - nv
            leaves = [t.detach().to(device).requires_grad_() for t in (q, k, v)]
            out = masked_attention(*leaves, nv, n_text.to(device), mode=mode, backend=backend)
            out.backward(dout.to(device))
            ref_leaves = [t.detach().double().to(device).requires_grad_() for t in (q, k, v)]
            ref = masked_attention(*ref_leaves, nv, n_text.to(device), mode=mode, backend="reference")
            ref.backward(dout.double().to(device))
            atol, rtol = TOL[dtype]
            errs = {}
            ok = True
            for name, got, want in [("out", out, ref)] + [
                (f"d{n}", a.grad, b.grad) for n, a, b in zip("qkv", leaves, ref_leaves)
            ]:
                diff = (got.double() - want).abs()
                errs[name] = diff.max().item()
                ok &= bool((diff <= atol + rtol * want.abs()).all())
                for s in range(B):  # padding rows: exactly 0
                    ok &= bool((got[s, :, nv + int(n_text[s]):] == 0).all())
            rows.append(dict(backend=backend, dtype=str(dtype)[6:], shape=(B, H, L, D, nv, mode), ok=ok, **errs))
            print(f"{'ok ' if ok else 'BAD'} {backend:<6} {str(dtype)[6:]:<8} B={B} H={H} L={L} Dh={D} nv={nv} {mode:<4} "
                  + " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    return rows


def _time_ms(fn, iters=50) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=iters * 2, return_mode="median")


def time_peers(device, B=256, H=12, n_visual=17, max_words=8, D=64, dtype=torch.bfloat16) -> list[dict]:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    L = n_visual + max_words
    gen = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen).to(device, dtype) for _ in range(4))
    n_text = torch.randint(1, max_words + 1, (B,), generator=gen, dtype=torch.int32).to(device)
    end = key_end(L, n_visual, n_text, False)
    dense = torch.arange(L, device=device)[None, None, :] < end[:, :, None]
    dense = (dense | (end == 0)[:, :, None])[:, None]

    def mask_mod(b, h, q_idx, kv_idx):
        n_valid = n_visual + n_text[b]
        visual_key = kv_idx < n_visual
        allowed = torch.where(q_idx < n_visual, visual_key, visual_key | (kv_idx <= q_idx))
        return allowed & (q_idx < n_valid) & (kv_idx < n_valid)

    block_mask = create_block_mask(mask_mod, B, None, L, L, device=device)
    flex = torch.compile(flex_attention)

    contenders = {
        "zsar cuda": lambda q, k, v: masked_attention(q, k, v, n_visual, n_text, backend="cuda"),
        "zsar triton": lambda q, k, v: masked_attention(q, k, v, n_visual, n_text, backend="triton"),
        "sdpa dense mask": lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense),
        "flex_attention (compiled)": lambda q, k, v: flex(q, k, v, block_mask=block_mask),
    }
    rows = []
    for name, fn in contenders.items():
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        with torch.no_grad():
            fwd = _time_ms(lambda: fn(q, k, v))
        fwd_bwd = _time_ms(lambda: fn(*leaves).backward(dout))
        rows.append(dict(contender=name, forward_ms=fwd, forward_backward_ms=fwd_bwd))
    ours = {r["contender"]: r for r in rows}["zsar cuda"]
    print(f"\nmasked_attention timings, B={B} H={H} L={L} Dh={D} {str(dtype)[6:]} ({torch.cuda.get_device_name()})")
    print(f"{'contender':<28}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd+bwd / zsar cuda':>22}")
    for r in rows:
        r["fwd_bwd_ratio_vs_zsar_cuda"] = r["forward_backward_ms"] / ours["forward_backward_ms"]
        print(f"{r['contender']:<28}{r['forward_ms']:>10.3f}{r['forward_backward_ms']:>12.3f}{r['fwd_bwd_ratio_vs_zsar_cuda']:>21.2f}x")
    return rows


def _bottleneck_case(device, name, B, H, L, D, n_fusion, n_valid, dtype=torch.bfloat16) -> list[dict]:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, L, D, generator=gen).to(device, dtype) for _ in range(4))
    n_valid = n_valid.to(device=device, dtype=torch.int32)
    pos = torch.arange(L, device=device)
    valid = (pos[None, :] < n_valid[:, None]) | (pos[None, :] >= L - n_fusion)  # (B, L)
    key_mask = valid[:, None, None, :]
    pairs = int((n_valid.long() + n_fusion).pow(2).sum()) * H

    def mask_mod(b, h, q_idx, kv_idx):
        tail = L - n_fusion
        return ((q_idx < n_valid[b]) | (q_idx >= tail)) & ((kv_idx < n_valid[b]) | (kv_idx >= tail))

    block_mask = create_block_mask(mask_mod, B, None, L, L, device=device)
    flex = torch.compile(flex_attention)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    contenders = {
        "zsar cuda": lambda q, k, v: bottleneck_attention(q, k, v, n_valid, n_fusion, backend="cuda",
                                                          check_n_valid=False),
        "zsar triton": lambda q, k, v: bottleneck_attention(q, k, v, n_valid, n_fusion, backend="triton",
                                                            check_n_valid=False),
        "sdpa key mask": lambda q, k, v: sdpa(q, k, v, attn_mask=key_mask),
        "flex_attention (compiled)": lambda q, k, v: flex(q, k, v, block_mask=block_mask),
    }
    groups = {}  # unpadded SDPA: samples with the same n_valid as one dense batch of their tokens
    for b, n in enumerate(n_valid.tolist()):
        groups.setdefault(n, []).append(b)
    if len(groups) <= 2:
        index = {n: (torch.tensor(bs, device=device),
                     torch.cat([torch.arange(n, device=device), torch.arange(L - n_fusion, L, device=device)]))
                 for n, bs in groups.items()}

        def unpadded(q, k, v):
            return [sdpa(*(t[bs][:, :, tok] for t in (q, k, v))) for bs, tok in index.values()]

        contenders["sdpa unpadded (no mask)"] = unpadded
    rows = []
    for contender, fn in contenders.items():
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]

        def step():
            outs = fn(*leaves)
            outs = outs if isinstance(outs, list) else [outs]
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs] if len(outs) > 1 else [dout])

        try:
            with torch.no_grad():
                fwd = _time_ms(lambda: fn(q, k, v))
            fwd_bwd = _time_ms(step)
        except Exception as exc:  # a contender that cannot run here is reported, not fatal
            print(f"  {name}: {contender} failed: {type(exc).__name__}: {exc}".splitlines()[0])
            continue
        rows.append(dict(case=name, contender=contender, forward_ms=fwd, forward_backward_ms=fwd_bwd,
                         forward_tflops=4 * D * pairs / fwd / 1e9, forward_backward_tflops=14 * D * pairs / fwd_bwd / 1e9))
    return rows


def time_bottleneck(device) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    L, n_fusion = 1609, 4
    cases = [
        ("av (a) no padding", 32, 12, L, 64, n_fusion, torch.full((32,), L - n_fusion)),
        ("av (b) half without audio", 32, 12, L, 64, n_fusion,
         torch.tensor([L - n_fusion] * 16 + [393] * 16)),
        ("text", 256, 12, 21, 64, n_fusion, torch.randint(2, 18, (256,), generator=gen)),
    ]
    rows = []
    for case in cases:
        rows += _bottleneck_case(device, *case)
    print(f"\nbottleneck_attention timings, bf16 ({torch.cuda.get_device_name()})")
    print(f"{'case':<28}{'contender':<28}{'fwd ms':>9}{'fwd+bwd ms':>12}{'fwd x':>8}{'f+b x':>8}{'TFLOP/s f':>11}{'f+b':>7}")
    for r in rows:
        ours = next(o for o in rows if o["case"] == r["case"] and o["contender"] == "zsar cuda") \
            if any(o["case"] == r["case"] and o["contender"] == "zsar cuda" for o in rows) else r
        r["fwd_ratio_vs_zsar_cuda"] = r["forward_ms"] / ours["forward_ms"]
        r["fwd_bwd_ratio_vs_zsar_cuda"] = r["forward_backward_ms"] / ours["forward_backward_ms"]
        print(f"{r['case']:<28}{r['contender']:<28}{r['forward_ms']:>9.3f}{r['forward_backward_ms']:>12.3f}"
              f"{r['fwd_ratio_vs_zsar_cuda']:>7.2f}x{r['fwd_bwd_ratio_vs_zsar_cuda']:>7.2f}x"
              f"{r['forward_tflops']:>11.1f}{r['forward_backward_tflops']:>7.1f}")
    return rows


OP_TESTS = ["test_bottleneck_attention.py", "test_masked_attention.py", "test_masked_attention_integration.py", "test_ops_nonfinite.py",
            "test_ops_registered.py", "test_ops_scaffolding.py"]


def run_op_tests() -> bool:
    """Runs the op tests of this checkout with pytest; True when they pass."""
    tests = Path(__file__).resolve().parent.parent / "tests"
    print(f"\nop tests ({tests}):", flush=True)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             *(str(tests / name) for name in OP_TESTS)])
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--no-tests", action="store_true", help="do not run the op tests")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch", file=sys.stderr)
        return 2
    build = _ext.build_info()
    print("build:", build)
    if not build.get("cuda"):
        print("gpu_check: zsar._C was built without CUDA; reinstall on a machine with nvcc", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    correctness = check_correctness(device)
    tests_ok = True if args.no_tests else run_op_tests()
    timings = time_peers(device)
    bottleneck_timings = time_bottleneck(device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), build=build, correctness=correctness,
                           op_tests_passed=tests_ok, timings=timings, bottleneck_timings=bottleneck_timings),
                      f, indent=2)
    return 0 if all(r["ok"] for r in correctness) and tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
