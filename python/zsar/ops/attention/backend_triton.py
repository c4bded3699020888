"""Triton backend of the fused attention: FlashAttention-2 style kernels tuned for short sequences.

Mask kind bottleneck (MZST) has its own kernels below (``_bn_*``): the same algorithm, with each
tile loop split into the sample's prefix tiles and tail tiles so padding-only tiles are skipped.

Mask kinds rest and full (see ``masks.py``): every query row attends a prefix ``[0, key_end(i))`` of
the keys, so the kernels compute ``key_end`` per row from the mask descriptor (``n_fixed``, the
per-sample ``lengths``, full or not) and stop their key (or query) loops at the last tile any row
of the current tile can reach.

Scores are kept in natural units, rounded once (``q . k * scale``), and only the exponent is taken
in base 2: the backward recomputes exactly the scores whose maximum the forward subtracted, so even
a huge scale cannot push an exponent above 0 (a log2-domain lse saved and rescaled would be off by
its rounding, ~1e4 at scale 1e10). A ``tl.where`` stands between each ``* scale`` and the
subtraction that follows, so the compiler cannot fuse them into an FMA that would skip the rounding.

Padding data (query rows and keys at or beyond ``n_valid``) is never read: those loads are masked
to zero, so even non-finite values in padding positions cannot leak into outputs or gradients.

Runs on CUDA, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``), which has no
bfloat16 arithmetic.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .._backend import CUDA_DEVICE, Backend, Requirement, Support
from .inputs import AttentionInputs

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

    @triton.jit
    def _row_key_end(offs_m, n_visual, n_valid, FULL: tl.constexpr):
        """Per-row number of attended keys (0 for padding rows); twin of ``masks.key_end``."""
        if FULL:
            end = tl.zeros_like(offs_m) + n_valid
        else:
            end = tl.where(offs_m < n_visual, n_visual, offs_m + 1)
        return tl.where(offs_m < n_valid, end, 0)

    @triton.jit
    def _tile_key_end(start_m, n_visual, n_valid, BLOCK_M: tl.constexpr, FULL: tl.constexpr):
        """Largest ``key_end`` over the query rows ``[start_m, start_m + BLOCK_M)`` (0: all padding)."""
        if FULL:
            end = n_valid
        else:
            # Visual rows reach n_visual, word rows i + 1: the last valid row of the tile decides.
            end = tl.maximum(n_visual, tl.minimum(start_m + BLOCK_M, n_valid))
        return tl.where(start_m < n_valid, end, 0)

    @triton.jit
    def _n_valid(n_text_ptr, b, n_visual, L):
        # Clamped so that a bad n_text can never index out of bounds.
        n_text = tl.load(n_text_ptr + b)
        n_text = tl.minimum(tl.maximum(n_text, 0), L - n_visual)
        return n_visual + n_text

    @triton.jit
    def _fwd_kernel(
        Q, K, V, N_TEXT, OUT, LSE,
        H, L, D, n_visual, scale,
        FULL: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        start_m = tl.program_id(1) * BLOCK_M
        n_valid = _n_valid(N_TEXT, pid_bh // H, n_visual, L)
        base = pid_bh.to(tl.int64) * L * D

        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d[None, :] < D
        ke = _row_key_end(offs_m, n_visual, n_valid, FULL)
        hi = _tile_key_end(start_m, n_visual, n_valid, BLOCK_M, FULL)

        q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :],
                    mask=(offs_m[:, None] < n_valid) & d_mask, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            kv_off = base + cols[:, None] * D + offs_d[None, :]
            kv_mask = (cols[:, None] < hi) & d_mask
            k = tl.load(K + kv_off, mask=kv_mask, other=0.0)
            v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * scale
            s = tl.where(cols[None, :] < ke[:, None], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            # Rows with no allowed key so far keep m = -inf; shift by 0 to avoid -inf - -inf = NaN.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2((m_i - m_safe) * _LOG2E_TL)
            p = tl.exp2((s - m_safe[:, None]) * _LOG2E_TL)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
            m_i = m_new

        # Padding rows store out = 0 and lse = 0. A valid row whose scores are all -inf has l = 0
        # and gives 0 / 0 = NaN, like the reference.
        # A +inf score gives m = +inf and l = NaN: lse is +inf then, as in torch.logsumexp. Padding
        # rows are written as 0 explicitly (acc may hold 0 * inf from a non-finite value).
        valid = ke > 0
        out = tl.where(valid[:, None], acc / tl.where(valid, l_i, 1.0)[:, None], 0.0)
        lse = tl.where(m_i == float("inf"), m_i, m_i + tl.log(tl.where(valid, l_i, 1.0)))
        lse = tl.where(valid, lse, 0.0)
        row_mask = offs_m < L
        tl.store(OUT + base + offs_m[:, None] * D + offs_d[None, :], out.to(OUT.dtype.element_ty),
                 mask=row_mask[:, None] & d_mask)
        tl.store(LSE + pid_bh.to(tl.int64) * L + offs_m, lse, mask=row_mask)

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
    def _bwd_dkdv_kernel(
        Q, K, V, N_TEXT, LSE, DELTA, DOUT, DK, DV,
        H, L, D, n_visual, scale,
        FULL: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """One key tile; loops over the query tiles that can attend it (works in transposed form)."""
        pid_bh = tl.program_id(0)
        start_n = tl.program_id(1) * BLOCK_N
        n_valid = _n_valid(N_TEXT, pid_bh // H, n_visual, L)
        base = pid_bh.to(tl.int64) * L * D
        row_base = pid_bh.to(tl.int64) * L

        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d[None, :] < D
        kv_off = base + offs_n[:, None] * D + offs_d[None, :]
        # Padding keys (>= n_valid) are attended by no query: they stay 0 and are never read.
        k = tl.load(K + kv_off, mask=(offs_n[:, None] < n_valid) & d_mask, other=0.0)
        v = tl.load(V + kv_off, mask=(offs_n[:, None] < n_valid) & d_mask, other=0.0)

        # Queries able to attend this tile: in rest mode a word key j is only seen by rows i >= j,
        # a visual key by every valid row; in full mode every valid row sees every valid key.
        if FULL:
            lo = 0
        else:
            lo = tl.where(start_n < n_visual, 0, (start_n // BLOCK_M) * BLOCK_M)
        hi = tl.where(start_n < n_valid, n_valid, 0)

        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        for start_m in range(lo, hi, BLOCK_M):
            rows = start_m + offs_m
            row_ok = rows < n_valid
            q_off = base + rows[:, None] * D + offs_d[None, :]
            q = tl.load(Q + q_off, mask=row_ok[:, None] & d_mask, other=0.0)
            do = tl.load(DOUT + q_off, mask=row_ok[:, None] & d_mask, other=0.0)
            lse = tl.load(LSE + row_base + rows, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
            ke = _row_key_end(rows, n_visual, n_valid, FULL)

            # Excluded pairs get p = 0 even when the row's lse is NaN (-inf - NaN would be NaN).
            attended = offs_n[:, None] < ke[None, :]
            s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * scale
            s_t = tl.where(attended, s_t, float("-inf"))  # (also keeps `* scale` out of an FMA below)
            p_t = tl.where(attended, tl.exp2((s_t - lse[None, :]) * _LOG2E_TL), 0.0)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PREC)
            dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PREC)

        # Padding keys get exactly 0 (the sums may hold 0 * inf from a non-finite q or dout).
        key_ok = offs_n[:, None] < n_valid
        st_mask = (offs_n[:, None] < L) & d_mask
        tl.store(DK + kv_off, tl.where(key_ok, dk * scale, 0.0).to(DK.dtype.element_ty), mask=st_mask)
        tl.store(DV + kv_off, tl.where(key_ok, dv, 0.0).to(DV.dtype.element_ty), mask=st_mask)

    @triton.jit
    def _bwd_dq_kernel(
        Q, K, V, N_TEXT, LSE, DELTA, DOUT, DQ,
        H, L, D, n_visual, scale,
        FULL: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """One query tile; loops over the key tiles its rows attend (same bound as the forward)."""
        pid_bh = tl.program_id(0)
        start_m = tl.program_id(1) * BLOCK_M
        n_valid = _n_valid(N_TEXT, pid_bh // H, n_visual, L)
        base = pid_bh.to(tl.int64) * L * D
        row_base = pid_bh.to(tl.int64) * L

        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d[None, :] < D
        row_ok = offs_m < n_valid
        q_off = base + offs_m[:, None] * D + offs_d[None, :]
        q = tl.load(Q + q_off, mask=row_ok[:, None] & d_mask, other=0.0)
        do = tl.load(DOUT + q_off, mask=row_ok[:, None] & d_mask, other=0.0)
        lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
        ke = _row_key_end(offs_m, n_visual, n_valid, FULL)
        hi = _tile_key_end(start_m, n_visual, n_valid, BLOCK_M, FULL)

        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            kv_off = base + cols[:, None] * D + offs_d[None, :]
            kv_mask = (cols[:, None] < hi) & d_mask
            k = tl.load(K + kv_off, mask=kv_mask, other=0.0)
            v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
            attended = cols[None, :] < ke[:, None]
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * scale
            s = tl.where(attended, s, float("-inf"))  # (also keeps `* scale` out of an FMA below)
            p = tl.where(attended, tl.exp2((s - lse[:, None]) * _LOG2E_TL), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)

        # Padding rows get exactly 0 (the sums may hold 0 * inf from a non-finite k).
        tl.store(DQ + q_off, tl.where(row_ok[:, None], dq * scale, 0.0).to(DQ.dtype.element_ty),
                 mask=(offs_m[:, None] < L) & d_mask)

    # ---- mask kind bottleneck: valid tokens [0, n_valid) and [L - n_fusion, L), all see each other ----
    #
    # The same FlashAttention-2 algorithm; each loop over key (or query) tiles runs over two ranges,
    # the prefix tiles and the tail tiles, so tiles that hold only padding are never visited (a tile
    # holding both ends of a short gap is visited once, in the first range).

    @triton.jit
    def _bn_bounds(n_valid_ptr, b, n_fusion, L, BLOCK: tl.constexpr):
        """(n_valid clamped to [0, L - n_fusion], tail start, end of the prefix tiles, start of the
        remaining tail tiles) of sample b."""
        n_valid = tl.load(n_valid_ptr + b)
        n_valid = tl.minimum(tl.maximum(n_valid, 0), L - n_fusion)
        tail = L - n_fusion
        prefix_end = tl.cdiv(n_valid, BLOCK) * BLOCK
        tail_start = tl.maximum((tail // BLOCK) * BLOCK, prefix_end)
        return n_valid, tail, prefix_end, tail_start

    @triton.jit
    def _bn_valid(pos, n_valid, tail, L):
        return (pos < n_valid) | ((pos >= tail) & (pos < L))

    @triton.jit
    def _bn_fwd_tile(q, acc, m_i, l_i, K, V, base, start_n, offs_n, offs_d, D, n_valid, tail, L, scale,
                     DOT_PREC: tl.constexpr):
        """One online-softmax step over the key tile at start_n."""
        cols = start_n + offs_n
        col_ok = _bn_valid(cols, n_valid, tail, L)
        kv_off = base + cols[:, None] * D + offs_d[None, :]
        kv_mask = col_ok[:, None] & (offs_d[None, :] < D)
        k = tl.load(K + kv_off, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * scale
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2((m_i - m_safe) * _LOG2E_TL)
        p = tl.exp2((s - m_safe[:, None]) * _LOG2E_TL)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        return acc, m_new, l_i

    @triton.jit
    def _bn_fwd_kernel(
        Q, K, V, N_VALID, OUT, LSE,
        H, L, D, n_fusion, scale,
        DOT_PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        start_m = tl.program_id(1) * BLOCK_M
        n_valid, tail, prefix_end, tail_start = _bn_bounds(N_VALID, pid_bh // H, n_fusion, L, BLOCK_N)
        base = pid_bh.to(tl.int64) * L * D
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d[None, :] < D
        row_ok = _bn_valid(offs_m, n_valid, tail, L)
        # A query tile of padding only skips both key loops (its rows are written as zeros).
        any_row = (start_m < n_valid) | (start_m + BLOCK_M > tail)
        prefix_end = tl.where(any_row, prefix_end, 0)
        tail_start = tl.where(any_row, tail_start, L)

        q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=row_ok[:, None] & d_mask, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start_n in range(0, prefix_end, BLOCK_N):
            acc, m_i, l_i = _bn_fwd_tile(q, acc, m_i, l_i, K, V, base, start_n, offs_n, offs_d, D, n_valid, tail,
                                         L, scale, DOT_PREC)
        for start_n in range(tail_start, L, BLOCK_N):
            acc, m_i, l_i = _bn_fwd_tile(q, acc, m_i, l_i, K, V, base, start_n, offs_n, offs_d, D, n_valid, tail,
                                         L, scale, DOT_PREC)
        out = tl.where(row_ok[:, None], acc / tl.where(row_ok, l_i, 1.0)[:, None], 0.0)
        lse = tl.where(m_i == float("inf"), m_i, m_i + tl.log(tl.where(row_ok, l_i, 1.0)))
        lse = tl.where(row_ok, lse, 0.0)
        in_range = offs_m < L
        tl.store(OUT + base + offs_m[:, None] * D + offs_d[None, :], out.to(OUT.dtype.element_ty),
                 mask=in_range[:, None] & d_mask)
        tl.store(LSE + pid_bh.to(tl.int64) * L + offs_m, lse, mask=in_range)

    @triton.jit
    def _bn_dkdv_tile(k, v, dk, dv, Q, DOUT, LSE, DELTA, base, row_base, start_m, offs_m, offs_d, D, key_ok,
                      n_valid, tail, L, scale, DOT_PREC: tl.constexpr):
        """dK, dV of one key tile from the query tile at start_m (transposed form)."""
        rows = start_m + offs_m
        row_ok = _bn_valid(rows, n_valid, tail, L)
        q_off = base + rows[:, None] * D + offs_d[None, :]
        q_mask = row_ok[:, None] & (offs_d[None, :] < D)
        q = tl.load(Q + q_off, mask=q_mask, other=0.0)
        do = tl.load(DOUT + q_off, mask=q_mask, other=0.0)
        lse = tl.load(LSE + row_base + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
        attended = key_ok[:, None] & row_ok[None, :]
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * scale
        s_t = tl.where(attended, s_t, float("-inf"))
        p_t = tl.where(attended, tl.exp2((s_t - lse[None, :]) * _LOG2E_TL), 0.0)
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PREC)
        return dk, dv

    @triton.jit
    def _bn_bwd_dkdv_kernel(
        Q, K, V, N_VALID, LSE, DELTA, DOUT, DK, DV,
        H, L, D, n_fusion, scale,
        DOT_PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        start_n = tl.program_id(1) * BLOCK_N
        n_valid, tail, prefix_end, tail_start = _bn_bounds(N_VALID, pid_bh // H, n_fusion, L, BLOCK_M)
        base = pid_bh.to(tl.int64) * L * D
        row_base = pid_bh.to(tl.int64) * L
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d[None, :] < D
        key_ok = _bn_valid(offs_n, n_valid, tail, L)
        kv_off = base + offs_n[:, None] * D + offs_d[None, :]
        k = tl.load(K + kv_off, mask=key_ok[:, None] & d_mask, other=0.0)
        v = tl.load(V + kv_off, mask=key_ok[:, None] & d_mask, other=0.0)
        any_key = (start_n < n_valid) | (start_n + BLOCK_N > tail)
        prefix_end = tl.where(any_key, prefix_end, 0)
        tail_start = tl.where(any_key, tail_start, L)

        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        for start_m in range(0, prefix_end, BLOCK_M):
            dk, dv = _bn_dkdv_tile(k, v, dk, dv, Q, DOUT, LSE, DELTA, base, row_base, start_m, offs_m, offs_d, D,
                                   key_ok, n_valid, tail, L, scale, DOT_PREC)
        for start_m in range(tail_start, L, BLOCK_M):
            dk, dv = _bn_dkdv_tile(k, v, dk, dv, Q, DOUT, LSE, DELTA, base, row_base, start_m, offs_m, offs_d, D,
                                   key_ok, n_valid, tail, L, scale, DOT_PREC)
        st_mask = (offs_n[:, None] < L) & d_mask
        tl.store(DK + kv_off, tl.where(key_ok[:, None], dk * scale, 0.0).to(DK.dtype.element_ty), mask=st_mask)
        tl.store(DV + kv_off, tl.where(key_ok[:, None], dv, 0.0).to(DV.dtype.element_ty), mask=st_mask)

    @triton.jit
    def _bn_dq_tile(q, do, lse, delta, dq, K, V, base, start_n, offs_n, offs_d, D, row_ok, n_valid, tail, L,
                    scale, DOT_PREC: tl.constexpr):
        """dQ of one query tile from the key tile at start_n."""
        cols = start_n + offs_n
        col_ok = _bn_valid(cols, n_valid, tail, L)
        kv_off = base + cols[:, None] * D + offs_d[None, :]
        kv_mask = col_ok[:, None] & (offs_d[None, :] < D)
        k = tl.load(K + kv_off, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
        attended = row_ok[:, None] & col_ok[None, :]
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * scale
        s = tl.where(attended, s, float("-inf"))
        p = tl.where(attended, tl.exp2((s - lse[:, None]) * _LOG2E_TL), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
        return dq

    @triton.jit
    def _bn_bwd_dq_kernel(
        Q, K, V, N_VALID, LSE, DELTA, DOUT, DQ,
        H, L, D, n_fusion, scale,
        DOT_PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        start_m = tl.program_id(1) * BLOCK_M
        n_valid, tail, prefix_end, tail_start = _bn_bounds(N_VALID, pid_bh // H, n_fusion, L, BLOCK_N)
        base = pid_bh.to(tl.int64) * L * D
        row_base = pid_bh.to(tl.int64) * L
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d[None, :] < D
        row_ok = _bn_valid(offs_m, n_valid, tail, L)
        q_off = base + offs_m[:, None] * D + offs_d[None, :]
        q = tl.load(Q + q_off, mask=row_ok[:, None] & d_mask, other=0.0)
        do = tl.load(DOUT + q_off, mask=row_ok[:, None] & d_mask, other=0.0)
        lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
        any_row = (start_m < n_valid) | (start_m + BLOCK_M > tail)
        prefix_end = tl.where(any_row, prefix_end, 0)
        tail_start = tl.where(any_row, tail_start, L)

        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start_n in range(0, prefix_end, BLOCK_N):
            dq = _bn_dq_tile(q, do, lse, delta, dq, K, V, base, start_n, offs_n, offs_d, D, row_ok, n_valid, tail,
                             L, scale, DOT_PREC)
        for start_n in range(tail_start, L, BLOCK_N):
            dq = _bn_dq_tile(q, do, lse, delta, dq, K, V, base, start_n, offs_n, offs_d, D, row_ok, n_valid, tail,
                             L, scale, DOT_PREC)
        tl.store(DQ + q_off, tl.where(row_ok[:, None], dq * scale, 0.0).to(DQ.dtype.element_ty),
                 mask=(offs_m[:, None] < L) & d_mask)


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
        block, block_d, num_warps = _launch_config(L, D)
        grid = (B * H, triton.cdiv(L, block))  # B*H first: grid dim 1 is limited to 65535
        if inp.mask_kind == "bottleneck":
            with _on_device(inp.device):
                _bn_fwd_kernel[grid](
                    inp.q, inp.k, inp.v, inp.lengths, out, lse, H, L, D, inp.n_fixed, inp.scale,
                    DOT_PREC=_dot_precision(inp.dtype), BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d,
                    num_warps=num_warps,
                )
            return out, lse
        with _on_device(inp.device):
            _fwd_kernel[grid](
                inp.q, inp.k, inp.v, inp.lengths, out, lse,
                H, L, D, inp.n_fixed, inp.scale,
                FULL=inp.mask_kind == "full", DOT_PREC=_dot_precision(inp.dtype),
                BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d, num_warps=num_warps,
            )
        return out, lse

    def backward(self, inp: AttentionInputs, outputs, grads) -> tuple[torch.Tensor, ...]:
        (out, lse), (dout,) = outputs, grads
        B, H, L, D = inp.shape
        dq = torch.empty_like(inp.q)
        dk = torch.empty_like(inp.k)
        dv = torch.empty_like(inp.v)
        delta = torch.empty((B, H, L), dtype=torch.float32, device=inp.device)
        block, block_d, num_warps = _launch_config(L, D)
        grid = (B * H, triton.cdiv(L, block))
        common = dict(
            FULL=inp.mask_kind == "full", DOT_PREC=_dot_precision(inp.dtype),
            BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d, num_warps=num_warps,
        )
        with _on_device(inp.device):
            _bwd_delta_kernel[grid](
                out, dout, delta, L, D, BLOCK_M=block, BLOCK_D=block_d, num_warps=num_warps
            )
            if inp.mask_kind == "bottleneck":
                del common["FULL"]
                args = (H, L, D, inp.n_fixed, inp.scale)
                _bn_bwd_dkdv_kernel[grid](inp.q, inp.k, inp.v, inp.lengths, lse, delta, dout, dk, dv, *args, **common)
                _bn_bwd_dq_kernel[grid](inp.q, inp.k, inp.v, inp.lengths, lse, delta, dout, dq, *args, **common)
                return dq, dk, dv
            _bwd_dkdv_kernel[grid](
                inp.q, inp.k, inp.v, inp.lengths, lse, delta, dout, dk, dv,
                H, L, D, inp.n_fixed, inp.scale, **common,
            )
            _bwd_dq_kernel[grid](
                inp.q, inp.k, inp.v, inp.lengths, lse, delta, dout, dq,
                H, L, D, inp.n_fixed, inp.scale, **common,
            )
        return dq, dk, dv
