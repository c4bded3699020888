"""The one GPU run of zsar's attention kernels: install, check against float64, time against peers.

GPU time is scarce (a GPU machine is lent by chance, for minutes), so everything is prepared on a
CPU machine and this script does the whole device run in one call, under a time budget (default
420 s, then up to 60 s more for the op tests; what no longer fits is recorded as skipped, so the
run stays under 8 minutes), writing every result under ``--out``
as it goes (``gpu_check.json``, ``gpu_check.md``, ``op_tests.log``; each file written new, then
renamed, so a killed run keeps what it finished).

Prepare (CPU machine with nvcc 13; the wheel must match the device's Python, 3.12 there):

    ZSAR_CUDA=ON ZSAR_CUDA_ARCHS=90 python3.12 -m pip wheel . --no-deps -w dist/

Run on the device (carry ``dist/``; the device has torch, Triton and pytest but no network):

    timeout 560 python bench/gpu_check.py --wheel dist/zsar-*.whl --out "$OUT"

Stages (run in the order 1, 2 for CUDA, 3, 4, 2 for Triton, 5: the most telling results first):
 1. install: ``pip install --no-deps --no-index --force-reinstall <wheel>``, then zsar is imported
    from it (the source tree's ``python/`` is never on the path), and its build must have CUDA.
 2. oracle: every backend that declares CUDA tensors (cuda, triton; cuda twice for fp16/bf16: its
    tensor-core kernels, and its CUDA-core kernels as "cuda-cores" with ZSAR_CUDA_MMA=0) x its dtypes x both ops
    (masked_attention rest/full, bottleneck_attention) x edge shapes, against the float64
    reference: fresh random inputs per case, the caching allocator's blocks filled with NaN before
    each call (outputs that a kernel leaves unwritten show up), padding rows exactly 0. The CUDA
    backend's bottleneck kernels are checked even though dispatch keeps that mask off them until
    they have passed here (the check enables them on the backend instance for its own calls).
 3. graphs: CUDA-graph capture and replay, and ``torch.compile(fullgraph=True)``, of forward +
    backward for each (op, backend), against eager results on new inputs.
 4. timings (``triton.testing.do_bench`` medians): masked_attention at ResT's shape (H=12,
    L=1+16+8, Dh=64, n_text 1..8) at B=4096 and B=256 for bf16 (and fp16, fp32 for zsar; zsar cuda
    also on its CUDA-core kernels) against
    SDPA with a dense mask, SDPA without a mask and compiled FlexAttention, with the forward
    bandwidth against the measured device copy rate; bottleneck_attention at MZST's shapes
    (B=16, H=12, Dh=64, n_fusion=4; L=1609 with n_valid 1000..1605, L=1609 with a quarter of the
    tokens padding, L=400 and L=1216 streams) against SDPA with a key mask, SDPA without a mask
    (flash: the floor) and FlexAttention, and the peak memory at L=8192.
 5. op tests: pytest on the attention op tests of this checkout (they use the installed zsar).
Targets: the ``target`` column of each table states the speed each row must reach.

Exit status: 0 when every check passed, 1 when one failed, 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
import zlib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TOL = {torch.float32: (2e-4, 2e-4), torch.float16: (4e-3, 2e-2), torch.bfloat16: (3e-2, 5e-2),
       torch.float64: (1e-9, 1e-9)}  # (atol, rtol) against float64

# masked_attention cases: B, H, L, Dh, n_visual, mode, n_text pattern ("random", "full", "zero")
MASKED_CASES = [
    (4, 3, 25, 64, 17, "rest", "random"),  # ResT's shape
    (2, 2, 25, 64, 17, "full", "random"),
    (3, 2, 9, 32, 9, "rest", "zero"),  # no word slots
    (1, 2, 7, 80, 2, "rest", "full"),  # odd L, head dim 80 (padded to 128 on tensor cores)
    (2, 1, 70, 128, 17, "rest", "random"),  # several 16-row blocks, head dim 128
    (2, 2, 128, 64, 40, "full", "random"),  # the longest L of the slice-per-CTA kernels
    (2, 1, 129, 64, 40, "rest", "random"),  # one past it: the CUDA-core kernels
    (3, 2, 130, 17, 33, "full", "random"),  # odd head dim: CUDA-core kernels for every dtype
    (5, 1, 1, 8, 1, "rest", "zero"),  # a single token
    (3, 2, 33, 40, 1, "rest", "random"),  # CLS only, head dim 40
]
# bottleneck_attention cases: B, H, L, Dh, n_fusion, n_valid pattern
BOTTLENECK_CASES = [
    (4, 2, 100, 64, 4, "random"),
    (3, 2, 70, 64, 0, "random"),  # no fusion tokens: plain key padding
    (3, 1, 21, 32, 4, "random"),  # MZST's text stream, shorter than one tile
    (2, 2, 200, 128, 4, "zero"),  # samples with only the fusion tokens
    (2, 2, 131, 40, 5, "full"),  # the prefix reaches into the fusion tokens' tile
    (2, 1, 96, 17, 3, "random"),  # odd head dim: CUDA-core kernels
    (2, 2, 1609, 64, 4, "mzst"),  # MZST's audio-video stream, n_valid in 1000..1605
]
QUICK_MASKED = [MASKED_CASES[0], MASKED_CASES[2], MASKED_CASES[8]]
QUICK_BOTTLENECK = [BOTTLENECK_CASES[0], BOTTLENECK_CASES[3]]


# ---- bookkeeping ----------------------------------------------------------------------------------

class Budget:
    """Seconds left of the run's time budget."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


class Report:
    """Results of the run, rewritten under ``out`` (new file, then rename) after every stage."""

    def __init__(self, out: Path | None):
        self.out = out
        self.data: dict = {"stages": {}}
        self.md: list[str] = []
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str, result) -> None:
        self.data["stages"][name] = result
        self.save()

    def table(self, title: str, header: list[str], rows: list[list]) -> None:
        lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        self.md += lines
        print("\n".join(lines), flush=True)
        self.save()

    def save(self) -> None:
        if self.out is None:
            return
        for name, text in (("gpu_check.json", json.dumps(self.data, indent=2, default=str)),
                           ("gpu_check.md", "\n".join(["# zsar GPU check", *self.md]) + "\n")):
            tmp = self.out / (name + ".tmp")
            tmp.write_text(text)
            tmp.replace(self.out / name)


def _cell(c) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        return f"{c:.3f}" if abs(c) < 1e4 else f"{c:.3g}"
    return str(c)


# ---- stage 1: install -----------------------------------------------------------------------------

def install(wheel: str) -> dict:
    """Installs ``wheel`` (no dependencies, no index) and imports zsar from it."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"gpu_check: {' '.join(cmd)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    importlib.invalidate_caches()
    return {"wheel": wheel, "pip": result.stdout.strip().splitlines()[-1:]}


def environment() -> dict:
    import triton

    import zsar
    from zsar import _ext

    env = {"zsar": zsar.__file__, "build": _ext.build_info(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "triton": triton.__version__, "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        with contextlib.suppress(Exception):
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
    return env


# ---- stage 2: oracle ------------------------------------------------------------------------------

@contextlib.contextmanager
def tensor_cores(enabled: bool):
    """The CUDA backend's fp16/bf16 calls inside run on its tensor-core kernels (``ZSAR_CUDA_MMA=1``)
    or, with ``enabled`` False, on its CUDA-core kernels (``ZSAR_CUDA_MMA=0``, the default until the
    tensor-core kernels have passed here); the compiled core reads it on every call."""
    previous = os.environ.get("ZSAR_CUDA_MMA")
    os.environ["ZSAR_CUDA_MMA"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["ZSAR_CUDA_MMA"]
        else:
            os.environ["ZSAR_CUDA_MMA"] = previous


@contextlib.contextmanager
def cuda_bottleneck_enabled():
    """Lets the CUDA backend serve the bottleneck mask for the calls inside (dispatch keeps it off
    until this check has passed on a GPU); restores the declaration afterwards."""
    from zsar.ops.bottleneck_attention import dispatcher

    backend = dispatcher.get("cuda")
    had = "mask_kinds" in vars(backend)
    kinds = backend.mask_kinds
    backend.mask_kinds = tuple(dict.fromkeys((*(kinds or ()), "bottleneck")))
    try:
        yield
    finally:
        if had:
            backend.mask_kinds = kinds
        else:
            del backend.mask_kinds


def poison(device: torch.device, like: torch.Tensor, count: int = 12) -> None:
    """Fills blocks of the caching allocator of ``like``'s size with NaN and frees them, so the next
    allocations of that size (the op's outputs) start out as NaN, not as zeros."""
    if device.type != "cuda":
        return
    blocks = [torch.full_like(like, float("nan")) for _ in range(count)]
    blocks += [torch.full(like.shape[:3], float("nan"), dtype=torch.float32, device=device) for _ in range(4)]
    del blocks


def _lengths(pattern: str, B: int, hi: int, gen: torch.Generator) -> torch.Tensor:
    if pattern == "zero":
        n = torch.zeros(B, dtype=torch.int32)
    elif pattern == "full":
        n = torch.full((B,), hi, dtype=torch.int32)
    elif pattern == "mzst":
        n = torch.randint(min(1000, hi), hi + 1, (B,), generator=gen, dtype=torch.int32)
    else:
        n = torch.randint(0, hi + 1, (B,), generator=gen, dtype=torch.int32)
        n[0] = hi
    return n


def oracle_calls(quick: bool = False) -> list[tuple[str, tuple, callable]]:
    """(op, case, make(gen) -> (call(q, k, v, backend), B, H, L, D, valid (B, L) bool))."""
    from zsar.ops import bottleneck_attention, masked_attention

    calls = []
    for case in QUICK_MASKED if quick else MASKED_CASES:
        B, H, L, D, nv, mode, pattern = case

        def make(gen, B=B, L=L, nv=nv, mode=mode, pattern=pattern):
            n_text = _lengths(pattern, B, L - nv, gen)
            valid = torch.arange(L)[None, :] < (nv + n_text.long())[:, None]

            def call(q, k, v, backend):
                return masked_attention(q, k, v, nv, n_text.to(q.device), mode=mode, backend=backend)
            return call, valid
        calls.append(("masked_attention", case, make))
    for case in QUICK_BOTTLENECK if quick else BOTTLENECK_CASES:
        B, H, L, D, nf, pattern = case

        def make(gen, B=B, L=L, nf=nf, pattern=pattern):
            n_valid = _lengths(pattern, B, L - nf, gen)
            pos = torch.arange(L)[None, :]
            valid = (pos < n_valid.long()[:, None]) | (pos >= L - nf)

            def call(q, k, v, backend):
                return bottleneck_attention(q, k, v, n_valid.to(q.device), nf, backend=backend)
            return call, valid
        calls.append(("bottleneck_attention", case, make))
    return calls


def _heuristic_tiles(backend: str, device: torch.device, L: int, D: int):
    """On the GPU, the Triton kernels with the interpreter's heuristic tiles (the oracle's many shapes
    would otherwise autotune, i.e. compile every config, for each; tests/test_triton_configs.py
    checks every autotune config in the interpreter)."""
    if backend != "triton" or device.type != "cuda":
        return contextlib.nullcontext()
    from zsar.ops.attention import backend_triton

    block, _, warps = backend_triton._launch_config(L, D)
    return backend_triton.forced_tiles((block, block, warps, 3))


def gpu_backends() -> list[tuple[str, torch.dtype]]:
    """(backend, dtype) for every non-reference attention backend that declares CUDA tensors."""
    from zsar.ops.masked_attention import dispatcher

    return [(b.name, dtype) for b in dispatcher.backends if b.name != "reference"
            for device, dtype in b.declared() if device == "cuda"]


def check_oracle(device: torch.device, backends: list[tuple[str, torch.dtype]] | None = None, quick: bool = False,
                 budget: Budget | None = None, seed: int = 0) -> list[dict]:
    """Every (backend, dtype) x :func:`oracle_calls` against the float64 reference on ``device``."""
    rows = []
    backends = gpu_backends() if backends is None else backends
    for op, case, make in oracle_calls(quick):
        for backend, dtype in backends:
            if budget is not None and budget.left() < 0:
                rows.append(dict(op=op, case=case, backend=backend, dtype=str(dtype)[6:], ok=None, note="skipped (budget)"))
                continue
            B, H, L, D = case[:4]
            gen = torch.Generator().manual_seed(zlib.crc32(repr((seed, op, case, backend, dtype)).encode()))
            call, valid = make(gen)
            q, k, v, dout = (torch.randn(B, H, L, D, generator=gen, dtype=torch.float64) for _ in range(4))
            row = dict(op=op, case=case, backend=backend, dtype=str(dtype)[6:])
            try:
                leaves = [t.to(device, dtype).requires_grad_() for t in (q, k, v)]
                with _heuristic_tiles(backend, device, L, D):
                    poison(device, leaves[0])
                    out = call(*leaves, backend)
                    poison(device, leaves[0])
                    out.backward(dout.to(device, dtype))
                ref_leaves = [t.to(device, dtype).double().requires_grad_() for t in (q, k, v)]
                ref = call(*ref_leaves, "reference")
                ref.backward(dout.to(device, dtype).double())
            except Exception as exc:  # reported per case; the run goes on
                rows.append({**row, "ok": False, "note": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
                print(f"BAD {op} {backend} {row['dtype']} {case}: {rows[-1]['note']}", flush=True)
                continue
            atol, rtol = TOL[dtype]
            pad = ~valid.to(device)[:, None, :, None]  # (B, 1, L, 1)
            ok, errs = True, {}
            for name, got, want in [("out", out.detach(), ref.detach())] + [(f"d{n}", a.grad, b.grad)
                                                          for n, a, b in zip("qkv", leaves, ref_leaves)]:
                got = got.double()
                diff = (got - want).abs()
                errs[name] = float(diff.max())
                ok &= bool((diff <= atol + rtol * want.abs()).all())
                ok &= bool((got.masked_select(pad.expand_as(got)) == 0).all())  # padding: exactly 0
            rows.append({**row, "ok": ok, **errs})
            print(f"{'ok ' if ok else 'BAD'} {op:<21} {backend:<6} {row['dtype']:<8} {case} "
                  + " ".join(f"{k}={v:.1e}" for k, v in errs.items()), flush=True)
    return rows


# ---- stage 3: CUDA graphs and torch.compile -------------------------------------------------------

def _graph_inputs(op: str, device, dtype, gen):
    if op == "masked_attention":
        B, H, L, D = 8, 4, 25, 64
        lengths = torch.randint(0, 9, (B,), generator=gen, dtype=torch.int32).to(device)
        from zsar.ops import masked_attention

        def fn(q, k, v, backend):
            return masked_attention(q, k, v, 17, lengths, backend=backend, check_n_text=False)
    else:
        B, H, L, D = 2, 4, 300, 64
        lengths = torch.tensor([296, 150], dtype=torch.int32, device=device)
        from zsar.ops import bottleneck_attention

        def fn(q, k, v, backend):
            return bottleneck_attention(q, k, v, lengths, 4, backend=backend, check_n_valid=False)
    shape = (B, H, L, D)
    return fn, shape


def check_graphs(device, backends: list[tuple[str, torch.dtype]], budget: Budget) -> list[dict]:
    """CUDA-graph capture + replay and torch.compile(fullgraph=True) of forward + backward."""
    rows = []
    gen = torch.Generator().manual_seed(3)
    for op in ("masked_attention", "bottleneck_attention"):
        for backend, dtype in backends:
            for kind in ("cuda_graph", "compile_fullgraph"):
                row = dict(op=op, backend=backend, dtype=str(dtype)[6:], check=kind)
                if budget.left() < 0:
                    rows.append({**row, "ok": None, "note": "skipped (budget)"})
                    continue
                fn, shape = _graph_inputs(op, device, dtype, gen)
                try:
                    ok, err = (_check_graph if kind == "cuda_graph" else _check_compile)(fn, shape, backend, dtype,
                                                                                       device, gen)
                    rows.append({**row, "ok": ok, "max_err": err})
                except Exception as exc:
                    rows.append({**row, "ok": False, "note": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
                print(f"{'ok ' if rows[-1]['ok'] else 'BAD'} {kind:<18} {op:<21} {backend:<6} {row['dtype']} "
                      f"{rows[-1].get('note', rows[-1].get('max_err'))}", flush=True)
    return rows


def _eager(fn, backend, q, k, v, dout):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, backend)
    out.backward(dout)
    return [out.detach()] + [t.grad for t in leaves]


def _close(got, want, dtype) -> tuple[bool, float]:
    """Whether the graph / compiled results match eager ones (same kernels; a backend whose backward
    sums with atomics may round differently, hence the dtype's tolerance), and the largest error."""
    atol, rtol = TOL[dtype]
    ok = all(torch.allclose(x.double(), y.double(), atol=atol, rtol=rtol) for x, y in zip(got, want))
    return ok, max(float((x.double() - y.double()).abs().max()) for x, y in zip(got, want))


def _check_graph(fn, shape, backend, dtype, device, gen):
    q, k, v, dout = (torch.randn(shape, generator=gen).to(device, dtype) for _ in range(4))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm up outside the capture (allocator, lazy init)
            for t in leaves:
                t.grad = None
            fn(*leaves, backend).backward(dout)
    torch.cuda.current_stream().wait_stream(side)
    for t in leaves:
        t.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*leaves, backend)
        out.backward(dout)
    fresh = [torch.randn(shape, generator=gen).to(device, dtype) for _ in range(4)]
    with torch.no_grad():
        for t, new in zip((*leaves, dout), fresh):
            t.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    want = _eager(fn, backend, *fresh)
    got = [out.detach()] + [t.grad for t in leaves]
    return _close(got, want, dtype)


def _check_compile(fn, shape, backend, dtype, device, gen):
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(lambda q, k, v: fn(q, k, v, backend), fullgraph=True)
    q, k, v, dout = (torch.randn(shape, generator=gen).to(device, dtype) for _ in range(4))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = compiled(*leaves)
    out.backward(dout)
    got = [out.detach()] + [t.grad for t in leaves]
    want = _eager(fn, backend, q, k, v, dout)
    return _close(got, want, dtype)


# ---- stage 4: timings -----------------------------------------------------------------------------

def _ms(fn, grad_to_none=None) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")


def copy_rate(device) -> float:
    """Measured device copy bandwidth in GB/s (read + write of a 1 GiB buffer)."""
    src = torch.empty(2**29, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    ms = _ms(lambda: dst.copy_(src))
    return 2 * src.numel() * 2 / ms / 1e6


def _time(name, fn, args, dout, budget: Budget, fwd_only: bool = False) -> dict:
    row = dict(contender=name)
    if budget.left() < 0:
        return {**row, "note": "skipped (budget)"}
    try:
        with getattr(fn, "context", contextlib.nullcontext)():
            with torch.no_grad():
                row["forward_ms"] = _ms(lambda: fn(*args))
            if not fwd_only:
                leaves = [t.detach().clone().requires_grad_() for t in args]
                row["forward_backward_ms"] = _ms(lambda: fn(*leaves).backward(dout), grad_to_none=leaves)
    except Exception as exc:  # a contender that cannot run (e.g. out of memory) is reported
        row["note"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        torch.cuda.empty_cache()
    return row


def _cuda_cores(fn):
    """``fn`` timed with the CUDA backend's tensor-core kernels switched off (forward and backward:
    :func:`_time` enters ``fn.context`` around both)."""
    def call(*args):
        return fn(*args)
    call.context = lambda: tensor_cores(False)
    return call


def _flex(mask_mod, B, L, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = create_block_mask(mask_mod, B, None, L, L, device=device)
    compiled = torch.compile(flex_attention)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask)


def time_masked(device, report: Report, budget: Budget, copy_gbs: float, batches=(4096, 256)) -> list[dict]:
    from zsar.ops.masked_attention import key_end, masked_attention

    sdpa = torch.nn.functional.scaled_dot_product_attention
    rows = []
    H, nv, words, D = 12, 17, 8, 64
    L = nv + words
    for B in batches:
        gen = torch.Generator().manual_seed(B)
        n_text = torch.randint(1, words + 1, (B,), generator=gen, dtype=torch.int32).to(device)
        end = key_end(L, nv, n_text, False)
        dense = (torch.arange(L, device=device)[None, None, :] < end[:, :, None]) | (end == 0)[:, :, None]
        dense = dense[:, None]

        def mask_mod(b, h, q_idx, kv_idx):
            visual = kv_idx < nv
            allowed = torch.where(q_idx < nv, visual, visual | (kv_idx <= q_idx))
            n_valid = nv + n_text[b]
            return allowed & (q_idx < n_valid) & (kv_idx < n_valid)

        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            args = [torch.randn(B, H, L, D, generator=gen).to(device, dtype) for _ in range(3)]
            dout = torch.randn(B, H, L, D, generator=gen).to(device, dtype)
            cuda = lambda q, k, v: masked_attention(q, k, v, nv, n_text, backend="cuda", check_n_text=False)  # noqa: E731
            contenders = {
                "zsar cuda": cuda,
                "zsar triton": lambda q, k, v: masked_attention(q, k, v, nv, n_text, backend="triton",
                                                                check_n_text=False),
            }
            if dtype != torch.float32:
                contenders["zsar cuda, CUDA cores"] = _cuda_cores(cuda)
                contenders["sdpa + dense mask"] = lambda q, k, v: sdpa(q, k, v, attn_mask=dense)
                contenders["sdpa, no mask"] = lambda q, k, v: sdpa(q, k, v)
            if dtype == torch.bfloat16:
                with contextlib.suppress(Exception):
                    contenders["flex (compiled)"] = _flex(mask_mod, B, L, device)
            elt = args[0].element_size()
            fwd_bytes = 4 * B * H * L * D * elt + 4 * B * H * L  # q, k, v, out + lse
            for name, fn in contenders.items():
                row = dict(op="masked_attention", B=B, dtype=str(dtype)[6:], **_time(name, fn, args, dout, budget))
                if "forward_ms" in row:
                    row["forward_GBps"] = fwd_bytes / row["forward_ms"] / 1e6
                    row["forward_pct_of_copy"] = 100 * row["forward_GBps"] / copy_gbs
                rows.append(row)
                print(row, flush=True)
    _ratios(rows, ("B", "dtype"))
    report.table(f"masked_attention, H={H} L={L} Dh={D}, n_text 1..{words} (copy rate {copy_gbs:.0f} GB/s)",
                 ["B", "dtype", "contender", "fwd ms", "fwd+bwd ms", "fwd GB/s", "% copy", "f+b vs zsar cuda"],
                 [[r["B"], r["dtype"], r["contender"], r.get("forward_ms", r.get("note")), r.get("forward_backward_ms"),
                   r.get("forward_GBps"), r.get("forward_pct_of_copy"), r.get("fwd_bwd_vs_zsar_cuda")] for r in rows])
    return rows


def _ratios(rows: list[dict], keys: tuple) -> None:
    """Adds each row's forward+backward time over zsar cuda's in the same group."""
    for r in rows:
        ours = next((o for o in rows if all(o.get(k) == r.get(k) for k in keys) and o["contender"] == "zsar cuda"), None)
        if ours and ours.get("forward_backward_ms") and r.get("forward_backward_ms"):
            r["fwd_bwd_vs_zsar_cuda"] = r["forward_backward_ms"] / ours["forward_backward_ms"]


BOTTLENECK_TIMINGS = [  # name, B, L, n_valid pattern
    ("av L=1609, n_valid 1000..1605", 16, 1609, "mzst"),
    ("av L=1609, a quarter padding", 16, 1609, "quarter"),
    ("audio L=400", 16, 400, "full"),
    ("video L=1216", 16, 1216, "full"),
]


def time_bottleneck(device, report: Report, budget: Budget, cases=BOTTLENECK_TIMINGS, memory: bool = True) -> list[dict]:
    from zsar.ops import bottleneck_attention

    sdpa = torch.nn.functional.scaled_dot_product_attention
    rows = []
    H, D, nf, dtype = 12, 64, 4, torch.bfloat16
    for name, B, L, pattern in cases:
        gen = torch.Generator().manual_seed(L)
        if pattern == "quarter":  # half the samples with half their tokens: a quarter of the batch is padding
            n_valid = torch.tensor([L - nf] * (B // 2) + [(L - nf) // 2] * (B - B // 2), dtype=torch.int32)
        else:
            n_valid = _lengths(pattern, B, L - nf, gen)
        n_valid = n_valid.to(device)
        pos = torch.arange(L, device=device)
        valid = (pos[None, :] < n_valid[:, None]) | (pos[None, :] >= L - nf)
        key_mask = valid[:, None, None, :]
        pairs = int((n_valid.long() + nf).pow(2).sum()) * H
        args = [torch.randn(B, H, L, D, generator=gen).to(device, dtype) for _ in range(3)]
        dout = torch.randn(B, H, L, D, generator=gen).to(device, dtype)

        def mask_mod(b, h, q_idx, kv_idx):
            tail = L - nf
            return ((q_idx < n_valid[b]) | (q_idx >= tail)) & ((kv_idx < n_valid[b]) | (kv_idx >= tail))

        contenders = {
            "zsar cuda": lambda q, k, v: bottleneck_attention(q, k, v, n_valid, nf, backend="cuda", check_n_valid=False),
            "zsar triton": lambda q, k, v: bottleneck_attention(q, k, v, n_valid, nf, backend="triton",
                                                                check_n_valid=False),
            "sdpa + key mask": lambda q, k, v: sdpa(q, k, v, attn_mask=key_mask),
            "sdpa flash, no mask (floor)": lambda q, k, v: sdpa(q, k, v),
        }
        contenders["zsar cuda, CUDA cores"] = _cuda_cores(contenders["zsar cuda"])
        with contextlib.suppress(Exception):
            contenders["flex (compiled)"] = _flex(mask_mod, B, L, device)
        for contender, fn in contenders.items():
            with cuda_bottleneck_enabled():
                row = dict(op="bottleneck_attention", case=name, **_time(contender, fn, args, dout, budget))
            if "forward_ms" in row:
                row["forward_TFLOPs"] = 4 * D * pairs / row["forward_ms"] / 1e9
            if row.get("forward_backward_ms"):
                row["fwd_bwd_TFLOPs"] = 14 * D * pairs / row["forward_backward_ms"] / 1e9
            rows.append(row)
            print(row, flush=True)
    if memory:
        rows += bottleneck_memory(device, budget)
    _ratios(rows, ("case",))
    report.table(f"bottleneck_attention, bf16, H={H} Dh={D} n_fusion={nf} (B=16 unless named)",
                 ["case", "contender", "fwd ms", "fwd+bwd ms", "TFLOP/s f", "TFLOP/s f+b", "f+b vs zsar cuda",
                  "peak MiB"],
                 [[r["case"], r["contender"], r.get("forward_ms", r.get("note")), r.get("forward_backward_ms"),
                   r.get("forward_TFLOPs"), r.get("fwd_bwd_TFLOPs"), r.get("fwd_bwd_vs_zsar_cuda"), r.get("peak_MiB")]
                  for r in rows])
    return rows


def bottleneck_memory(device, budget: Budget, B: int = 2, L: int = 8192) -> list[dict]:
    """Peak memory of forward + backward at L=8192 (zsar linear in L; SDPA with a mask is not)."""
    from zsar.ops import bottleneck_attention

    rows = []
    H, D, nf = 12, 64, 4
    n_valid = torch.tensor([L - nf, L // 2], dtype=torch.int32, device=device)
    pos = torch.arange(L, device=device)
    key_mask = ((pos[None, :] < n_valid[:, None]) | (pos[None, :] >= L - nf))[:, None, None, :]
    contenders = {
        "zsar cuda": lambda q, k, v: bottleneck_attention(q, k, v, n_valid, nf, backend="cuda", check_n_valid=False),
        "zsar triton": lambda q, k, v: bottleneck_attention(q, k, v, n_valid, nf, backend="triton", check_n_valid=False),
        "sdpa + key mask": lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=key_mask),
    }
    for name, fn in contenders.items():
        row = dict(op="bottleneck_attention", case=f"memory L={L} B={B}", contender=name)
        if budget.left() < 0:
            rows.append({**row, "note": "skipped (budget)"})
            continue
        leaves = [torch.randn(B, H, L, D, device=device, dtype=torch.bfloat16).requires_grad_() for _ in range(3)]
        dout = torch.ones_like(leaves[0])
        try:
            with cuda_bottleneck_enabled():
                fn(*leaves).backward(dout)  # first call: autotuning and its buffers stay out of the peak
                for t in leaves:
                    t.grad = None
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                fn(*leaves).backward(dout)
                torch.cuda.synchronize()
            row["forward_backward_ms"] = 1e3 * (time.perf_counter() - t0)  # one call
            row["peak_MiB"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        except Exception as exc:
            row["note"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        del leaves
        torch.cuda.empty_cache()
        rows.append(row)
    return rows


# ---- stage 5: op tests ----------------------------------------------------------------------------

OP_TESTS = ["test_bottleneck_attention.py", "test_masked_attention.py", "test_masked_attention_integration.py",
            "test_ops_nonfinite.py", "test_ops_registered.py", "test_ops_scaffolding.py"]


def run_op_tests(out: Path | None, timeout: float) -> dict:
    """Runs the attention op tests of this checkout against the installed zsar."""
    if importlib.util.find_spec("pytest") is None:
        print("op tests: pytest is not installed here, not run", flush=True)
        return {"returncode": None, "summary": "pytest not installed", "ok": None}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           *(str(REPO / "tests" / name) for name in OP_TESTS)]
    if out is not None:
        cmd.append(f"--junitxml={out / 'op_tests.xml'}")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1), cwd=REPO)
        log, code = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as exc:
        log, code = f"{exc.stdout or ''}\n(killed after {timeout:.0f} s: budget)", None
        log = log if isinstance(log, str) else log.decode()
    if out is not None:
        (out / "op_tests.log").write_text(log)
    tail = log.strip().splitlines()[-1:] or [""]
    print(f"op tests: {tail[0]}", flush=True)
    return {"returncode": code, "summary": tail[0], "ok": code == 0}


# ---- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", help="install this zsar wheel first (pip --no-deps --no-index)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default: $OUT)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds for the checks and timings (default 420); the op tests run last, "
                             "for what is left plus 60 s")
    parser.add_argument("--quick", action="store_true", help="a few oracle cases, no timings or op tests")
    parser.add_argument("--no-tests", action="store_true", help="skip the op tests")
    parser.add_argument("--no-timings", action="store_true", help="skip the timings")
    parser.add_argument("--seed", type=int, default=None, help="seed of the oracle's inputs (default: a fresh one)")
    args = parser.parse_args(argv)
    seed = random.SystemRandom().randrange(2**31) if args.seed is None else args.seed
    budget = Budget(args.budget)
    report = Report(Path(args.out) if args.out else None)
    if args.wheel:
        report.stage("install", install(args.wheel))
    if not torch.cuda.is_available():
        report.stage("error", "no CUDA device visible to torch")
        print("gpu_check: no CUDA device visible to torch", file=sys.stderr)
        return 2
    env = environment()
    report.stage("environment", env)
    print("environment:", env, flush=True)
    if not env["build"].get("cuda"):
        report.stage("error", "zsar._C was built without CUDA")
        print(f"gpu_check: zsar._C ({env['zsar']}) was built without CUDA; build the wheel with ZSAR_CUDA=ON",
              file=sys.stderr)
        return 2
    device = torch.device("cuda")
    # The tensor-core kernels are what this run is for: on for every stage (graphs, timings and the
    # op tests' subprocess too) unless the caller set ZSAR_CUDA_MMA; "cuda-cores" rows switch them off.
    os.environ.setdefault("ZSAR_CUDA_MMA", "1")
    backends = gpu_backends()
    # Most telling first, so that a budget overrun cuts the least: the CUDA kernels' oracle (no JIT),
    # graphs and compile, the timings, then the Triton oracle (JIT per shape) and the op tests.
    oracle = []
    for part in ("cuda", "cuda-cores", "triton"):
        if part == "triton" and not args.quick:
            with cuda_bottleneck_enabled():
                graphs = check_graphs(device, backends, budget)
            report.stage("graphs", graphs)
            report.table("CUDA graphs and torch.compile(fullgraph=True), forward + backward",
                         ["op", "backend", "dtype", "check", "ok", "max err / note"],
                         [[r["op"], r["backend"], r["dtype"], r["check"], r["ok"], r.get("note", r.get("max_err"))]
                          for r in graphs])
            if not args.no_timings:
                copy_gbs = copy_rate(device)
                report.stage("copy_GBps", copy_gbs)
                report.stage("masked_timings", time_masked(device, report, budget, copy_gbs))
                report.stage("bottleneck_timings", time_bottleneck(device, report, budget))
        # "cuda-cores": the CUDA backend with its tensor-core kernels switched off (ZSAR_CUDA_MMA=0),
        # i.e. the CUDA-core kernels for fp16/bf16 too.
        name = "cuda" if part == "cuda-cores" else part
        with cuda_bottleneck_enabled(), tensor_cores(part != "cuda-cores"):
            rows = check_oracle(device, [b for b in backends if b[0] == name and
                                         (part != "cuda-cores" or b[1] != torch.float32)],
                                quick=args.quick, budget=budget, seed=seed)
        oracle += [{**r, "backend": part} for r in rows]
        report.stage("oracle", {"seed": seed, "cases": oracle})
    report.table("oracle against float64 (failures)", ["op", "backend", "dtype", "case", "note / max errors"],
                 [[r["op"], r["backend"], r["dtype"], r["case"],
                   r.get("note") or {k: r[k] for k in ("out", "dq", "dk", "dv") if k in r}]
                  for r in oracle if r["ok"] is False] or [["-", "-", "-", "-", f"all {len(oracle)} cases passed"]])
    graphs = report.data["stages"].get("graphs", [])
    tests = None
    if not (args.quick or args.no_tests):
        tests = run_op_tests(report.out, max(budget.left(), 0) + 60)
        report.stage("op_tests", tests)
    checks = [r["ok"] for r in oracle + graphs if r["ok"] is not None] + ([tests["ok"]] if tests and tests["ok"] is not None else [])
    report.stage("passed", all(checks))
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
