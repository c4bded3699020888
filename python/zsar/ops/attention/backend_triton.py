"""Triton backend of the fused attention: one FlashAttention-2 style kernel family for every mask kind.

Three kernels (forward; backward dK/dV per key tile; backward dQ per query tile) take the mask kind
as a compile-time parameter (``MASK``, the kind's ``code`` in ``masks.py``), flash-attention style.
A sample's valid positions are a prefix ``[0, n_valid)`` and a tail ``[tail, L)``: the tail is
empty for the prefix kinds (rest, full) and holds the ``n_fixed`` fusion tokens of the bottleneck
kind. Every tile loop runs over two ranges of tiles, the prefix range and the tail range, with one
step function, so tiles that hold only padding are never visited; in rest mode the prefix range
also stops at the last key (or starts at the first query) any row of the tile can reach.

Scores are kept in natural units, rounded once (``q . k * scale``), and only the exponent is taken
in base 2. Every kernel computes a tile's scores in one orientation, ``dot(q_tile, trans(k_tile))``
(the backward works on ``trans(p)`` rather than recomputing ``k . q``), so the backward recomputes
bit for bit the scores whose maximum the forward subtracted; and the backward's exponent is
clamped at 0 (``p <= 1``), so no rounding difference can overflow it (see :func:`_bwd_tile`).
A ``tl.where`` stands between each ``* scale`` and the subtraction that follows, so the compiler
cannot fuse them into an FMA that would skip the rounding.

Padding data (query rows and keys outside the valid positions) is never read: those loads are
masked to zero, so even non-finite values in padding positions cannot leak into outputs or
gradients.

Runs on CUDA, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``), which has no
bfloat16 arithmetic.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .._backend import CUDA_DEVICE, Backend, Requirement, Support
from .inputs import AttentionInputs
from .masks import MASK_KINDS

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # the module must import (and report why) without triton
    _TRITON_IMPORT_ERROR: str | None = f"triton is not importable ({exc})"
else:
    _TRITON_IMPORT_ERROR = None

# triton.jit picks interpreter or compiled kernels when it decorates them, i.e. at import.
_INTERPRETED_AT_IMPORT = os.environ.get("TRITON_INTERPRET") == "1"
_LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)): the hardware has exp2


if _TRITON_IMPORT_ERROR is None:
    _LOG2E_TL = tl.constexpr(_LOG2E)
    _REST = tl.constexpr(MASK_KINDS["rest"].code)
    _BOTTLENECK = tl.constexpr(MASK_KINDS["bottleneck"].code)

    @triton.jit
    def _layout(LENGTHS, b, n_fixed, L, MASK: tl.constexpr):
        """``(n_valid, tail)`` of sample b: its valid positions are ``[0, n_valid)`` and ``[tail, L)``.

        The length is clamped to ``[0, L - n_fixed]`` so that a bad value can never index out of
        bounds (``masks.MaskKind.clamp``)."""
        length = tl.load(LENGTHS + b)
        length = tl.minimum(tl.maximum(length, 0), L - n_fixed)
        if MASK == _BOTTLENECK:
            n_valid = length
            tail = L - n_fixed
        else:
            n_valid = n_fixed + length
            tail = L
        return n_valid, tail

    @triton.jit
    def _valid(pos, n_valid, tail, L):
        return (pos < n_valid) | ((pos >= tail) & (pos < L))

    @triton.jit
    def _attended(rows, cols, n_fixed, n_valid, tail, L, MASK: tl.constexpr):
        """``(rows, cols)`` bool: query ``rows[i]`` attends key ``cols[j]`` (``masks.MaskKind.allowed``)."""
        ok = _valid(rows, n_valid, tail, L)[:, None] & _valid(cols, n_valid, tail, L)[None, :]
        if MASK == _REST:
            # Visual rows see the visual keys; word row i sees the visual keys and words j <= i.
            ok = ok & ((cols[None, :] < n_fixed) | ((rows[:, None] >= n_fixed) & (cols[None, :] <= rows[:, None])))
        return ok

    @triton.jit
    def _tile_has_valid(start, n_valid, tail, L, BLOCK: tl.constexpr):
        return (start < n_valid) | ((start + BLOCK > tail) & (tail < L))

    @triton.jit
    def _tail_start(prefix_end, tail, L, BLOCK: tl.constexpr):
        """First tile of the tail range: after the prefix range's last tile; L (empty) without a tail."""
        start = tl.maximum((tail // BLOCK) * BLOCK, tl.cdiv(prefix_end, BLOCK) * BLOCK)
        return tl.where(tail < L, start, L)

    @triton.jit
    def _key_tiles(start_m, n_fixed, n_valid, tail, L, MASK: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Key ranges the query tile at start_m reaches: ``[0, prefix_end)`` and ``[tail_start, L)``."""
        if MASK == _REST:
            # Visual rows reach n_fixed, word rows i + 1: the last valid row of the tile decides.
            prefix_end = tl.maximum(n_fixed, tl.minimum(start_m + BLOCK_M, n_valid))
        else:
            prefix_end = n_valid
        any_row = _tile_has_valid(start_m, n_valid, tail, L, BLOCK_M)
        prefix_end = tl.where(any_row, prefix_end, 0)
        tail_start = tl.where(any_row, _tail_start(prefix_end, tail, L, BLOCK_N), L)
        return prefix_end, tail_start

    @triton.jit
    def _query_tiles(start_n, n_fixed, n_valid, tail, L, MASK: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Query ranges that attend the key tile at start_n: ``[lo, prefix_end)``, ``[tail_start, L)``."""
        if MASK == _REST:
            # A word key j is seen only by rows i >= j; a visual key by every valid row.
            lo = tl.where(start_n < n_fixed, 0, (start_n // BLOCK_M) * BLOCK_M)
        else:
            lo = 0
        any_key = _tile_has_valid(start_n, n_valid, tail, L, BLOCK_N)
        prefix_end = tl.where(any_key, n_valid, 0)
        tail_start = tl.where(any_key, _tail_start(prefix_end, tail, L, BLOCK_M), L)
        return lo, prefix_end, tail_start

    @triton.jit
    def _scores(q, k, attended, scale, DOT_PREC: tl.constexpr):
        """Scores of a (query tile, key tile) pair, -inf where not attended. The one orientation
        every kernel computes them in (see the module docstring)."""
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * scale
        return tl.where(attended, s, float("-inf"))  # (also keeps `* scale` out of an FMA)

    @triton.jit
    def _load_rows(PTR, base, rows, offs_d, D, row_ok):
        return tl.load(PTR + base + rows[:, None] * D + offs_d[None, :],
                       mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)

    @triton.jit
    def _fwd_step(q, acc, m_i, l_i, K, V, base, rows, start_n, offs_n, offs_d, D,
                  n_fixed, n_valid, tail, prefix_end, L, scale, MASK: tl.constexpr, DOT_PREC: tl.constexpr):
        """One online-softmax step of a query tile over the key tile at start_n."""
        cols = start_n + offs_n
        # Keys beyond the range's end are not read (no row of the tile attends them).
        kv_ok = _valid(cols, prefix_end, tail, L)
        k = _load_rows(K, base, cols, offs_d, D, kv_ok)
        v = _load_rows(V, base, cols, offs_d, D, kv_ok)
        s = _scores(q, k, _attended(rows, cols, n_fixed, n_valid, tail, L, MASK), scale, DOT_PREC)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # Rows with no allowed key so far keep m = -inf; shift by 0 to avoid -inf - -inf = NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2((m_i - m_safe) * _LOG2E_TL)
        p = tl.exp2((s - m_safe[:, None]) * _LOG2E_TL)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        return acc, m_new, l_i

    @triton.jit
    def _fwd_kernel(
        Q, K, V, LENGTHS, OUT, LSE,
        H, L, D, n_fixed, scale,
        MASK: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        start_m = tl.program_id(1) * BLOCK_M
        n_valid, tail = _layout(LENGTHS, pid_bh // H, n_fixed, L, MASK)
        base = pid_bh.to(tl.int64) * L * D
        rows = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        row_ok = _valid(rows, n_valid, tail, L)
        prefix_end, tail_start = _key_tiles(start_m, n_fixed, n_valid, tail, L, MASK, BLOCK_M, BLOCK_N)

        q = _load_rows(Q, base, rows, offs_d, D, row_ok)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start_n in range(0, prefix_end, BLOCK_N):
            acc, m_i, l_i = _fwd_step(q, acc, m_i, l_i, K, V, base, rows, start_n, offs_n, offs_d, D,
                                      n_fixed, n_valid, tail, prefix_end, L, scale, MASK, DOT_PREC)
        for start_n in range(tail_start, L, BLOCK_N):
            acc, m_i, l_i = _fwd_step(q, acc, m_i, l_i, K, V, base, rows, start_n, offs_n, offs_d, D,
                                      n_fixed, n_valid, tail, prefix_end, L, scale, MASK, DOT_PREC)

        # Padding rows store out = 0 and lse = 0 (acc may hold 0 * inf from a non-finite value).
        # A valid row whose scores are all -inf has l = 0 and gives 0 / 0 = NaN, like the
        # reference; a +inf score gives m = +inf and l = NaN: lse is +inf then, as torch.logsumexp.
        out = tl.where(row_ok[:, None], acc / tl.where(row_ok, l_i, 1.0)[:, None], 0.0)
        lse = tl.where(m_i == float("inf"), m_i, m_i + tl.log(tl.where(row_ok, l_i, 1.0)))
        lse = tl.where(row_ok, lse, 0.0)
        in_range = rows < L
        tl.store(OUT + base + rows[:, None] * D + offs_d[None, :], out.to(OUT.dtype.element_ty),
                 mask=in_range[:, None] & (offs_d[None, :] < D))
        tl.store(LSE + pid_bh.to(tl.int64) * L + rows, lse, mask=in_range)

    @triton.jit
    def _bwd_delta_kernel(
        OUT, DOUT, DELTA, L, D,
        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """delta_i = sum_d dout_i * out_i (fp32). Padding rows are masked out by the consumers."""
        pid_bh = tl.program_id(0)
        offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        base = pid_bh.to(tl.int64) * L * D
        mask = (offs_m[:, None] < L) & (offs_d[None, :] < D)
        off = base + offs_m[:, None] * D + offs_d[None, :]
        o = tl.load(OUT + off, mask=mask, other=0.0).to(tl.float32)
        do = tl.load(DOUT + off, mask=mask, other=0.0).to(tl.float32)
        tl.store(DELTA + pid_bh.to(tl.int64) * L + offs_m, tl.sum(o * do, axis=1), mask=offs_m < L)

    @triton.jit
    def _bwd_tile(q, do, lse, delta, k, v, attended, scale, DOT_PREC: tl.constexpr):
        """``(p, ds)`` of a (query tile, key tile) pair, both ``(BLOCK_M, BLOCK_N)``.

        ``p = exp(s - lse)`` with the exponent clamped at 0. Mathematically lse >= every attended
        score, so p <= 1; but at a huge scale (1e20) one float32 ulp of a score is ~1e13, and any
        difference between the forward's and the backward's rounding of a score (a BLAS kernel
        summing in another order, as the Triton interpreter's numpy matmul does on an AVX2 host
        when one kernel computed ``k . q`` and the other ``q . k``; an MMA accumulation order on a
        GPU) gave exp(+1e13) = inf and a non-finite dK where the math is finite. The clamp
        (``where``, so a NaN exponent stays NaN) bounds p by construction on any device.
        """
        s = _scores(q, k, attended, scale, DOT_PREC)
        x = s - lse[:, None]
        x = tl.where(x > 0.0, 0.0, x)
        # Excluded pairs get p = 0 even when the row's lse is NaN (-inf - NaN would be NaN).
        p = tl.where(attended, tl.exp2(x * _LOG2E_TL), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        return p, p * (dp - delta[:, None])

    @triton.jit
    def _dkdv_step(k, v, dk, dv, Q, DOUT, LSE, DELTA, base, row_base, start_m, offs_m, offs_d, D, keys,
                   n_fixed, n_valid, tail, L, scale, MASK: tl.constexpr, DOT_PREC: tl.constexpr):
        """dK, dV of one key tile from the query tile at start_m."""
        rows = start_m + offs_m
        row_ok = _valid(rows, n_valid, tail, L)
        q = _load_rows(Q, base, rows, offs_d, D, row_ok)
        do = _load_rows(DOUT, base, rows, offs_d, D, row_ok)
        lse = tl.load(LSE + row_base + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
        attended = _attended(rows, keys, n_fixed, n_valid, tail, L, MASK)
        p, ds = _bwd_tile(q, do, lse, delta, k, v, attended, scale, DOT_PREC)
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=DOT_PREC)
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=DOT_PREC)
        return dk, dv

    @triton.jit
    def _bwd_dkdv_kernel(
        Q, K, V, LENGTHS, LSE, DELTA, DOUT, DK, DV,
        H, L, D, n_fixed, scale,
        MASK: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """One key tile; loops over the query tiles that can attend it."""
        pid_bh = tl.program_id(0)
        start_n = tl.program_id(1) * BLOCK_N
        n_valid, tail = _layout(LENGTHS, pid_bh // H, n_fixed, L, MASK)
        base = pid_bh.to(tl.int64) * L * D
        row_base = pid_bh.to(tl.int64) * L
        keys = start_n + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        key_ok = _valid(keys, n_valid, tail, L)
        # Padding keys are attended by no query: they stay 0 and are never read.
        k = _load_rows(K, base, keys, offs_d, D, key_ok)
        v = _load_rows(V, base, keys, offs_d, D, key_ok)
        lo, prefix_end, tail_start = _query_tiles(start_n, n_fixed, n_valid, tail, L, MASK, BLOCK_M, BLOCK_N)

        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        for start_m in range(lo, prefix_end, BLOCK_M):
            dk, dv = _dkdv_step(k, v, dk, dv, Q, DOUT, LSE, DELTA, base, row_base, start_m, offs_m, offs_d, D,
                                keys, n_fixed, n_valid, tail, L, scale, MASK, DOT_PREC)
        for start_m in range(tail_start, L, BLOCK_M):
            dk, dv = _dkdv_step(k, v, dk, dv, Q, DOUT, LSE, DELTA, base, row_base, start_m, offs_m, offs_d, D,
                                keys, n_fixed, n_valid, tail, L, scale, MASK, DOT_PREC)

        # Padding keys get exactly 0 (the sums may hold 0 * inf from a non-finite q or dout).
        kv_off = base + keys[:, None] * D + offs_d[None, :]
        st_mask = (keys[:, None] < L) & (offs_d[None, :] < D)
        tl.store(DK + kv_off, tl.where(key_ok[:, None], dk * scale, 0.0).to(DK.dtype.element_ty), mask=st_mask)
        tl.store(DV + kv_off, tl.where(key_ok[:, None], dv, 0.0).to(DV.dtype.element_ty), mask=st_mask)

    @triton.jit
    def _dq_step(q, do, lse, delta, dq, K, V, base, rows, start_n, offs_n, offs_d, D,
                 n_fixed, n_valid, tail, prefix_end, L, scale, MASK: tl.constexpr, DOT_PREC: tl.constexpr):
        """dQ of one query tile from the key tile at start_n."""
        cols = start_n + offs_n
        kv_ok = _valid(cols, prefix_end, tail, L)
        k = _load_rows(K, base, cols, offs_d, D, kv_ok)
        v = _load_rows(V, base, cols, offs_d, D, kv_ok)
        attended = _attended(rows, cols, n_fixed, n_valid, tail, L, MASK)
        p, ds = _bwd_tile(q, do, lse, delta, k, v, attended, scale, DOT_PREC)
        return dq + tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)

    @triton.jit
    def _bwd_dq_kernel(
        Q, K, V, LENGTHS, LSE, DELTA, DOUT, DQ,
        H, L, D, n_fixed, scale,
        MASK: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """One query tile; loops over the key tiles its rows attend (the forward's ranges)."""
        pid_bh = tl.program_id(0)
        start_m = tl.program_id(1) * BLOCK_M
        n_valid, tail = _layout(LENGTHS, pid_bh // H, n_fixed, L, MASK)
        base = pid_bh.to(tl.int64) * L * D
        row_base = pid_bh.to(tl.int64) * L
        rows = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        row_ok = _valid(rows, n_valid, tail, L)
        q = _load_rows(Q, base, rows, offs_d, D, row_ok)
        do = _load_rows(DOUT, base, rows, offs_d, D, row_ok)
        lse = tl.load(LSE + row_base + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
        prefix_end, tail_start = _key_tiles(start_m, n_fixed, n_valid, tail, L, MASK, BLOCK_M, BLOCK_N)

        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start_n in range(0, prefix_end, BLOCK_N):
            dq = _dq_step(q, do, lse, delta, dq, K, V, base, rows, start_n, offs_n, offs_d, D,
                          n_fixed, n_valid, tail, prefix_end, L, scale, MASK, DOT_PREC)
        for start_n in range(tail_start, L, BLOCK_N):
            dq = _dq_step(q, do, lse, delta, dq, K, V, base, rows, start_n, offs_n, offs_d, D,
                          n_fixed, n_valid, tail, prefix_end, L, scale, MASK, DOT_PREC)

        # Padding rows get exactly 0 (the sums may hold 0 * inf from a non-finite k).
        tl.store(DQ + base + rows[:, None] * D + offs_d[None, :],
                 tl.where(row_ok[:, None], dq * scale, 0.0).to(DQ.dtype.element_ty),
                 mask=(rows[:, None] < L) & (offs_d[None, :] < D))


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _triton_error(device: torch.device) -> str | None:
    return _TRITON_IMPORT_ERROR


def _interpreter_error(device: torch.device) -> str | None:
    if not _interpreting():
        return "Triton runs on cpu tensors only under its interpreter (TRITON_INTERPRET=1 before importing zsar)"
    if not _INTERPRETED_AT_IMPORT:
        return "TRITON_INTERPRET=1 was set after zsar was imported; the kernels were built for the GPU"
    return None


def _bfloat16_error(device: torch.device) -> str | None:
    if _interpreting():
        return "bfloat16 is not supported by the Triton interpreter (TRITON_INTERPRET=1)"
    if not torch.cuda.is_available():
        return None  # CUDA_DEVICE says why
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 0):
        return f"bfloat16 needs compute capability >= 8.0, {device} has {capability[0]}.{capability[1]}"
    return None


TRITON = Requirement("triton", _triton_error)
TRITON_INTERPRETER = Requirement("the Triton interpreter", _interpreter_error)
BFLOAT16_ON_GPU = Requirement("bfloat16 arithmetic in Triton", _bfloat16_error)


# Autotuned tiles on the GPU (Hopper first): (BLOCK_M, BLOCK_N, num_warps, num_stages). The
# interpreter runs the single heuristic config of _launch_config instead (autotuning there would
# only time numpy); tests/test_triton_configs.py runs every config below in the interpreter.
# Short sequences (ResT, L <= 32) try 16- and 32-row tiles; long ones (MZST's streams, L > 128)
# three FA2 tiles each, so a new (L, D, dtype) costs at most 9 compilations.
FWD_CONFIGS = [(16, 16, 4, 1), (32, 32, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (128, 32, 4, 3)]
DKDV_CONFIGS = [(16, 16, 4, 1), (32, 32, 4, 2), (32, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2)]
DQ_CONFIGS = [(16, 16, 4, 1), (32, 32, 4, 2), (64, 32, 4, 2), (64, 64, 8, 2), (128, 64, 8, 2)]


def _prune(configs, named_args, **kwargs):
    """Keeps tiles no longer than the sequence (rounded up to a power of two >= 16), only tiles of
    64 rows or more past L = 128, and no 4-warp tile of 64 rows or more at head dim > 64 (they
    spill on sm_90); never returns an empty list."""
    L, D = named_args["L"], named_args["D"]
    longest = max(16, triton.next_power_of_2(L))

    def keep(c):
        m, n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        return (m <= longest and n <= longest and (L <= 128 or max(m, n) >= 64)
                and not (D > 64 and c.num_warps < 8 and max(m, n) >= 64))
    return [c for c in configs if keep(c)] or configs[:1]


def _autotuned(kernel, tiles):
    """``kernel`` autotuned over ``tiles`` per (L, D, mask kind, dot precision, dtypes) on the GPU;
    unchanged under the interpreter."""
    if _INTERPRETED_AT_IMPORT:
        return kernel
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in tiles]
    return triton.autotune(configs=configs, key=["L", "D", "MASK", "DOT_PREC"],
                           prune_configs_by={"early_config_prune": _prune})(kernel)


if _TRITON_IMPORT_ERROR is None:
    _fwd = _autotuned(_fwd_kernel, FWD_CONFIGS)
    _bwd_dkdv = _autotuned(_bwd_dkdv_kernel, DKDV_CONFIGS)
    _bwd_dq = _autotuned(_bwd_dq_kernel, DQ_CONFIGS)


def _launch_config(seq_len: int, head_dim: int) -> tuple[int, int, int]:
    """(rows per tile, padded head dim, warps). tl.dot needs every dimension >= 16 on the GPU.

    16-row tiles keep ResT's L ~ 25 to two tiles; longer sequences use 32-row tiles, with 8 warps so
    that head-dim-128 tiles fit in registers (with 4 warps they spill on sm_90).
    """
    block = 16 if seq_len <= 32 else 32
    return block, max(16, triton.next_power_of_2(head_dim)), 4 if block == 16 else 8


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs would otherwise be rounded to tf32 in tl.dot; keep them exact like the other
    # backends. The setting does not affect fp16 / bf16 operands.
    return "ieee" if dtype == torch.float32 else "tf32"


def _on_device(device: torch.device):
    # Triton launches on the current CUDA device; make it the tensors' device.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class TritonBackend(Backend):
    """FlashAttention-2 style Triton kernels: every mask kind, head dim <= 128.

    float32/float16 (and bfloat16 at compute capability >= 8.0) on CUDA; float32/float16 on cpu
    tensors under the Triton interpreter (``TRITON_INTERPRET=1`` before importing zsar). See the
    module docstring.
    """

    name = "triton"
    # cuda first: the device tests prefer when both are usable.
    supports = (
        Support("cuda", (torch.float32, torch.float16), requires=(TRITON, CUDA_DEVICE)),
        Support("cuda", (torch.bfloat16,), requires=(TRITON, CUDA_DEVICE, BFLOAT16_ON_GPU)),
        Support("cpu", (torch.float32, torch.float16), requires=(TRITON, TRITON_INTERPRETER),
                note="the Triton interpreter"),
    )
    max_head_dim = 128
    mask_kinds = ("rest", "full", "bottleneck")

    def forward(self, inp: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, L, D = inp.shape
        out = torch.empty_like(inp.q)
        lse = torch.empty((B, H, L), dtype=torch.float32, device=inp.device)
        with _on_device(inp.device):
            _run(_fwd, "BLOCK_M", inp, (inp.q, inp.k, inp.v, inp.lengths, out, lse, H, L, D, inp.n_fixed, inp.scale))
        return out, lse

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        (out, lse), (dout,) = outputs, grads
        B, H, L, D = inp.shape
        dq = torch.empty_like(inp.q)
        dk = torch.empty_like(inp.k)
        dv = torch.empty_like(inp.v)
        delta = torch.empty((B, H, L), dtype=torch.float32, device=inp.device)
        block, block_d, num_warps = _launch_config(L, D)
        sizes = (H, L, D, inp.n_fixed, inp.scale)
        with _on_device(inp.device):
            _bwd_delta_kernel[(B * H, triton.cdiv(L, block))](out, dout, delta, L, D, BLOCK_M=block, BLOCK_D=block_d,
                                                              num_warps=num_warps)
            _run(_bwd_dkdv, "BLOCK_N", inp, (inp.q, inp.k, inp.v, inp.lengths, lse, delta, dout, dk, dv, *sizes))
            _run(_bwd_dq, "BLOCK_M", inp, (inp.q, inp.k, inp.v, inp.lengths, lse, delta, dout, dq, *sizes))
        return dq, dk, dv


#: Tiles forced on every launch (BLOCK_M, BLOCK_N, num_warps, num_stages), or None: autotuned on
#: the GPU, _launch_config's under the interpreter. Set by :func:`forced_tiles` (tests, benches).
_FORCED_TILES: tuple[int, int, int, int] | None = None


@contextlib.contextmanager
def forced_tiles(tiles: tuple[int, int, int, int]):
    """Runs every Triton attention kernel launched inside with these tiles (no autotuning)."""
    global _FORCED_TILES
    previous, _FORCED_TILES = _FORCED_TILES, tiles
    try:
        yield
    finally:
        _FORCED_TILES = previous


def _run(kernel, grid_block: str, inp: AttentionInputs, args: tuple) -> None:
    """Launches ``kernel`` (autotuned or plain) with one program per (batch * head, tile of
    ``grid_block`` rows): B*H first, since grid dim 1 is limited to 65535."""
    B, H, L, D = inp.shape
    params = _kernel_params(inp)
    tuned = isinstance(kernel, triton.runtime.Autotuner)
    if _FORCED_TILES is not None:
        kernel = kernel.fn if tuned else kernel  # the jit function under the Autotuner
        m, n, w, st = _FORCED_TILES
        params.update(BLOCK_M=m, BLOCK_N=n, num_warps=w, num_stages=st)
    elif tuned:  # the Autotuner picks the tiles and warps
        for name in ("BLOCK_M", "BLOCK_N", "num_warps"):
            del params[name]
        kernel[lambda meta: (B * H, triton.cdiv(L, meta[grid_block]))](*args, **params)
        return
    kernel[(B * H, triton.cdiv(L, params[grid_block]))](*args, **params)


def _kernel_params(inp: AttentionInputs) -> dict:
    """Compile-time parameters of the three kernels: mask kind, dot precision, tiles, warps."""
    block, block_d, num_warps = _launch_config(inp.shape[2], inp.shape[3])
    return dict(
        MASK=MASK_KINDS[inp.mask_kind].code, DOT_PREC=_dot_precision(inp.dtype),
        BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d, num_warps=num_warps,
    )
