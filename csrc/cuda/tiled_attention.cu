// Tiled (flash-style) CUDA kernels for the mask kinds where every valid token sees every valid token
// (Bottleneck, MZST's attention-bottleneck fusion); kinds and arguments are in
// csrc/include/zsar/attention.h.
//
// A block owns one tile of kRows query rows (forward, dq) or key rows (dk/dv) of one (batch, head)
// and streams tiles of the other operand through shared memory, converted to float on load
// (convert.cuh, shared with prefix_attention.cu). Each loop over tiles runs over two ranges, the
// sample's prefix tiles and its tail (fusion-token) tiles, so tiles that hold only padding are
// never loaded; a block whose own tile is padding only writes zeros. The forward keeps a running
// maximum and normaliser per row (online softmax) and saves the log-sum-exp; the backward
// recomputes the probabilities from it (FlashAttention-2: a delta kernel, a dq kernel over key
// tiles and a dk/dv kernel over query tiles, so no atomics). Launched on the caller's stream, no
// host synchronisation, no allocation (delta lives in the caller's workspace).
//
// Arithmetic is float FMA on CUDA cores for every dtype (fp16/bf16 inputs, fp32 accumulation).
// Tensor-core (mma) tiles for fp16/bf16 are the next step for speed; this version is the
// correctness baseline of the same tiling.
#include "tiled_attention.h"

#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "convert.cuh"
#include "launch.cuh"
#include "mma.cuh"

namespace zsar {
namespace {

constexpr int kRows = 16;              // rows per tile, both operands
constexpr int kThreads = 128;          // threads per block
constexpr int kColGroups = kThreads / kRows;  // threads sharing one output row: columns c, c + 8, ...
constexpr int kMaxHeadDim = 128;
constexpr int kMaxCols = kMaxHeadDim / kColGroups;  // output columns per thread

// Shared rows are head_dim + 1 floats long (odd: no bank conflicts).
using Params = KernelProblem;

// Whether position `pos` of the sample is a valid token (inside the sequence, not padding).
__device__ __forceinline__ bool token_ok(const SampleMask& m, int pos) { return pos < m.seq_len && m.valid(pos); }

// The two tile ranges of a sample: prefix tiles [0, prefix_end) and tail tiles [tail_start, seq_len).
struct TileRanges {
  int prefix_end, tail_start;
};
__device__ __forceinline__ TileRanges tile_ranges(const SampleMask& m) {
  const int prefix_end = cdiv(static_cast<int>(m.n_valid), kRows) * kRows;
  const int tail_tile = static_cast<int>(m.tail_begin) / kRows * kRows;
  return {prefix_end, max(tail_tile, prefix_end)};
}

// Whether the rows [r0, r0 + rows) hold a valid token.
__device__ __forceinline__ bool tile_has_tokens(const SampleMask& m, int r0, int rows = kRows) {
  return r0 < m.n_valid || (r0 + rows > m.tail_begin && r0 < m.seq_len);
}

// Rows [r0, r0 + kRows) of a (L, head_dim) slice -> shared rows as float; padding rows become 0.
template <typename T>
__device__ __forceinline__ void load_tile(float* dst, const T* src, int r0, const SampleMask& m, const Params& p) {
  for (int e = threadIdx.x; e < kRows * p.head_dim; e += blockDim.x) {
    const int r = e / p.head_dim, d = e - r * p.head_dim;
    dst[r * p.stride + d] = token_ok(m, r0 + r) ? to_float(src[static_cast<int64_t>(r0 + r) * p.head_dim + d]) : 0.f;
  }
}

__device__ __forceinline__ float row_dot(const float* a, const float* b, int n) {
  float acc = 0.f;
  for (int d = 0; d < n; ++d) acc = fmaf(a[d], b[d], acc);
  return acc;
}

// Calls visit(tile start) for every tile of the sample that holds a valid token, in order.
template <typename Visit>
__device__ __forceinline__ void for_each_token_tile(const SampleMask& m, Visit visit) {
  const TileRanges t = tile_ranges(m);
  for (int n0 = 0; n0 < t.prefix_end; n0 += kRows) visit(n0);
  for (int n0 = t.tail_start; n0 < m.seq_len; n0 += kRows) visit(n0);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) tiled_fwd_kernel(Params p, const T* q, const T* k, const T* v, T* out,
                                                             float* lse) {
  extern __shared__ float smem[];
  const int S = p.stride, D = p.head_dim, L = p.seq_len;
  float* qs = smem;                     // (kRows, S)
  float* ks = qs + kRows * S;           // (kRows, S)
  float* vs = ks + kRows * S;           // (kRows, S)
  float* ps = vs + kRows * S;           // (kRows, kRows + 1) scores, then probabilities
  float* row_max = ps + kRows * (kRows + 1);
  float* row_sum = row_max + kRows;
  float* row_alpha = row_sum + kRows;

  const int bh = blockIdx.x, m0 = blockIdx.y * kRows;
  const SampleMask m = sample_mask(p.mask, bh / p.heads, L);
  const int64_t base = static_cast<int64_t>(bh) * L * D;
  const int r_own = threadIdx.x / kColGroups, c_own = threadIdx.x % kColGroups;
  float acc[kMaxCols];
#pragma unroll
  for (int c = 0; c < kMaxCols; ++c) acc[c] = 0.f;
  if (threadIdx.x < kRows) row_max[threadIdx.x] = -INFINITY, row_sum[threadIdx.x] = 0.f;

  if (tile_has_tokens(m, m0)) {
    load_tile(qs, q + base, m0, m, p);
    for_each_token_tile(m, [&](int n0) {
      __syncthreads();  // the previous tile is consumed
      load_tile(ks, k + base, n0, m, p);
      load_tile(vs, v + base, n0, m, p);
      __syncthreads();
      for (int e = threadIdx.x; e < kRows * kRows; e += blockDim.x) {
        const int r = e / kRows, j = e % kRows;
        const float s = scaled(p.scale, row_dot(qs + r * S, ks + j * S, D));
        ps[r * (kRows + 1) + j] = token_ok(m, n0 + j) ? s : -INFINITY;
      }
      __syncthreads();
      if (threadIdx.x < kRows) {  // online softmax of one row
        float* row = ps + threadIdx.x * (kRows + 1);
        float mx = -INFINITY;
        for (int j = 0; j < kRows; ++j) mx = fmaxf(mx, row[j]);
        const float m_old = row_max[threadIdx.x], m_new = fmaxf(m_old, mx);
        const float shift = m_new == -INFINITY ? 0.f : m_new;  // no -inf - -inf
        float sum = 0.f;
        for (int j = 0; j < kRows; ++j) {
          row[j] = __expf(row[j] - shift);
          sum += row[j];
        }
        const float alpha = __expf(m_old - shift);
        row_sum[threadIdx.x] = row_sum[threadIdx.x] * alpha + sum;
        row_max[threadIdx.x] = m_new;
        row_alpha[threadIdx.x] = alpha;
      }
      __syncthreads();
      const float alpha = row_alpha[r_own];
      const float* prow = ps + r_own * (kRows + 1);
#pragma unroll
      for (int c = 0; c < kMaxCols; ++c) {
        const int col = c_own + c * kColGroups;
        if (col < D) {
          float a = acc[c] * alpha;
          for (int j = 0; j < kRows; ++j) a = fmaf(prow[j], vs[j * S + col], a);
          acc[c] = a;
        }
      }
    });
  }
  __syncthreads();
  const int pos = m0 + r_own;
  if (pos < L) {
    const bool ok = token_ok(m, pos);
    const float inv_l = ok ? 1.f / row_sum[r_own] : 0.f;
#pragma unroll
    for (int c = 0; c < kMaxCols; ++c) {
      const int col = c_own + c * kColGroups;
      if (col < D) out[base + static_cast<int64_t>(pos) * D + col] = from_float<T>(ok ? acc[c] * inv_l : 0.f);
    }
    if (c_own == 0) {
      const float mx = row_max[r_own];
      lse[static_cast<int64_t>(bh) * L + pos] = !ok ? 0.f : (mx == INFINITY ? mx : mx + logf(row_sum[r_own]));
    }
  }
}

// delta_i = dout_i . out_i (0 on padding rows), into the caller's (B, H, L) float workspace.
template <typename T>
__global__ void tiled_delta_kernel(Params p, int64_t rows, const T* out, const T* dout, float* delta) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  const int L = p.seq_len, D = p.head_dim;
  const SampleMask m = sample_mask(p.mask, i / L / p.heads, L);
  float acc = 0.f;
  if (token_ok(m, static_cast<int>(i % L))) {
    for (int d = 0; d < D; ++d) acc = fmaf(to_float(dout[i * D + d]), to_float(out[i * D + d]), acc);
  }
  delta[i] = acc;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) tiled_bwd_dq_kernel(Params p, const T* q, const T* k, const T* v,
                                                                const float* lse, const float* delta,
                                                                const T* dout, T* dq) {
  extern __shared__ float smem[];
  const int S = p.stride, D = p.head_dim, L = p.seq_len;
  float* qs = smem;
  float* dos = qs + kRows * S;
  float* ks = dos + kRows * S;
  float* vs = ks + kRows * S;
  float* ds = vs + kRows * S;  // (kRows, kRows + 1): score gradients
  float* row_lse = ds + kRows * (kRows + 1);
  float* row_delta = row_lse + kRows;

  const int bh = blockIdx.x, m0 = blockIdx.y * kRows;
  const SampleMask m = sample_mask(p.mask, bh / p.heads, L);
  const int64_t base = static_cast<int64_t>(bh) * L * D, row_base = static_cast<int64_t>(bh) * L;
  const int r_own = threadIdx.x / kColGroups, c_own = threadIdx.x % kColGroups;
  float acc[kMaxCols];
#pragma unroll
  for (int c = 0; c < kMaxCols; ++c) acc[c] = 0.f;

  if (tile_has_tokens(m, m0)) {
    load_tile(qs, q + base, m0, m, p);
    load_tile(dos, dout + base, m0, m, p);
    if (threadIdx.x < kRows) {
      const bool ok = token_ok(m, m0 + threadIdx.x);
      row_lse[threadIdx.x] = ok ? lse[row_base + m0 + threadIdx.x] : 0.f;
      row_delta[threadIdx.x] = ok ? delta[row_base + m0 + threadIdx.x] : 0.f;
    }
    for_each_token_tile(m, [&](int n0) {
      __syncthreads();
      load_tile(ks, k + base, n0, m, p);
      load_tile(vs, v + base, n0, m, p);
      __syncthreads();
      for (int e = threadIdx.x; e < kRows * kRows; e += blockDim.x) {
        const int r = e / kRows, j = e % kRows;
        float g = 0.f;
        if (token_ok(m, m0 + r) && token_ok(m, n0 + j)) {
          const float s = scaled(p.scale, row_dot(qs + r * S, ks + j * S, D));
          const float prob = __expf(s - row_lse[r]);
          g = prob * (row_dot(dos + r * S, vs + j * S, D) - row_delta[r]);
        }
        ds[r * (kRows + 1) + j] = g;
      }
      __syncthreads();
      const float* grow = ds + r_own * (kRows + 1);
#pragma unroll
      for (int c = 0; c < kMaxCols; ++c) {
        const int col = c_own + c * kColGroups;
        if (col < D) {
          float a = acc[c];
          for (int j = 0; j < kRows; ++j) a = fmaf(grow[j], ks[j * S + col], a);
          acc[c] = a;
        }
      }
    });
  }
  const int pos = m0 + r_own;
  if (pos < L) {
    const bool ok = token_ok(m, pos);
#pragma unroll
    for (int c = 0; c < kMaxCols; ++c) {
      const int col = c_own + c * kColGroups;
      if (col < D) dq[base + static_cast<int64_t>(pos) * D + col] = from_float<T>(ok ? acc[c] * p.scale : 0.f);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) tiled_bwd_dkdv_kernel(Params p, const T* q, const T* k, const T* v,
                                                                  const float* lse, const float* delta,
                                                                  const T* dout, T* dk, T* dv) {
  extern __shared__ float smem[];
  const int S = p.stride, D = p.head_dim, L = p.seq_len;
  float* ks = smem;
  float* vs = ks + kRows * S;
  float* qs = vs + kRows * S;
  float* dos = qs + kRows * S;
  float* pt = dos + kRows * S;           // (kRows keys, kRows + 1 queries): probabilities, transposed
  float* dst = pt + kRows * (kRows + 1);  // score gradients, transposed
  float* row_lse = dst + kRows * (kRows + 1);
  float* row_delta = row_lse + kRows;

  const int bh = blockIdx.x, n0 = blockIdx.y * kRows;
  const SampleMask m = sample_mask(p.mask, bh / p.heads, L);
  const int64_t base = static_cast<int64_t>(bh) * L * D, row_base = static_cast<int64_t>(bh) * L;
  const int j_own = threadIdx.x / kColGroups, c_own = threadIdx.x % kColGroups;
  float acc_k[kMaxCols], acc_v[kMaxCols];
#pragma unroll
  for (int c = 0; c < kMaxCols; ++c) acc_k[c] = 0.f, acc_v[c] = 0.f;

  if (tile_has_tokens(m, n0)) {
    load_tile(ks, k + base, n0, m, p);
    load_tile(vs, v + base, n0, m, p);
    for_each_token_tile(m, [&](int m0) {
      __syncthreads();
      load_tile(qs, q + base, m0, m, p);
      load_tile(dos, dout + base, m0, m, p);
      if (threadIdx.x < kRows) {
        const bool ok = token_ok(m, m0 + threadIdx.x);
        row_lse[threadIdx.x] = ok ? lse[row_base + m0 + threadIdx.x] : 0.f;
        row_delta[threadIdx.x] = ok ? delta[row_base + m0 + threadIdx.x] : 0.f;
      }
      __syncthreads();
      for (int e = threadIdx.x; e < kRows * kRows; e += blockDim.x) {
        const int j = e / kRows, r = e % kRows;
        float prob = 0.f, g = 0.f;
        if (token_ok(m, n0 + j) && token_ok(m, m0 + r)) {
          const float s = scaled(p.scale, row_dot(ks + j * S, qs + r * S, D));
          prob = __expf(s - row_lse[r]);
          g = prob * (row_dot(vs + j * S, dos + r * S, D) - row_delta[r]);
        }
        pt[j * (kRows + 1) + r] = prob;
        dst[j * (kRows + 1) + r] = g;
      }
      __syncthreads();
      const float* prow = pt + j_own * (kRows + 1);
      const float* grow = dst + j_own * (kRows + 1);
#pragma unroll
      for (int c = 0; c < kMaxCols; ++c) {
        const int col = c_own + c * kColGroups;
        if (col < D) {
          float a = acc_v[c], b = acc_k[c];
          for (int r = 0; r < kRows; ++r) {
            a = fmaf(prow[r], dos[r * S + col], a);
            b = fmaf(grow[r], qs[r * S + col], b);
          }
          acc_v[c] = a;
          acc_k[c] = b;
        }
      }
    });
  }
  const int pos = n0 + j_own;
  if (pos < L) {
    const bool ok = token_ok(m, pos);
#pragma unroll
    for (int c = 0; c < kMaxCols; ++c) {
      const int col = c_own + c * kColGroups;
      if (col < D) {
        const int64_t at = base + static_cast<int64_t>(pos) * D + col;
        dk[at] = from_float<T>(ok ? acc_k[c] * p.scale : 0.f);
        dv[at] = from_float<T>(ok ? acc_v[c] : 0.f);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core kernels (fp16/bf16, head_dim % 8 == 0), csrc/cuda/mma.cuh: FlashAttention-2 tiles.
//
// A CTA of 4 warps owns kMmaTile = 64 query rows (forward, dq) or key rows (dk/dv) of one
// (batch, head), warp w rows [16 w, 16 w + 16), and streams 64-row tiles of the other operand
// through shared memory with cp.async, double buffered (the next tile is in flight while the
// current one is used). Only the sample's prefix tiles [0, n_valid) and tail (fusion) tiles are
// visited; rows that are not valid tokens are zero-filled on load and masked in the scores.
//  * forward: S = Q K^T, online softmax, O += P V (P rounded to T), 16 keys per step;
//  * dq kernel (query tiles): delta = rowsum(dO * O) into the workspace, then per key step
//    S, dP = dO V^T, dS = P (dP - delta), dQ += dS K;
//  * dk/dv kernel (key tiles): per query step S^T = K Q^T and dP^T = V dO^T (the same products as
//    the forward's, so P matches it), dV += P^T dO, dK += dS^T Q. No atomics.
// Sizes at MZST's audio-video stream (B = 16, H = 12, L = 1609, Dh = 64, ~1609 valid tokens):
// valid pairs 16 * 12 * 1609^2 = 497 M, forward 4 * 64 * 497 M = 127 GFLOP, backward 2.5x that;
// the tensors are 16 * 12 * 1609 * 64 * 2 B = 39.5 MB each (forward 158 MB, backward 316 MB of
// traffic), so the kernels are bound by the tensor cores: predicted 0.42 ms forward, 1.1 ms
// backward at 300 TFLOP/s (mma.sync on an H100/H200).

constexpr int kMmaTile = 64;
constexpr int kMmaThreads = 128;

// The tiles of a sample that hold valid tokens: prefix tiles, then tail tiles.
struct TileList {
  int n_prefix, tail_start, count;
  __device__ __forceinline__ int start(int i) const {
    return i < n_prefix ? i * kMmaTile : tail_start + (i - n_prefix) * kMmaTile;
  }
};
__device__ __forceinline__ TileList tile_list(const SampleMask& m) {
  const int L = static_cast<int>(m.seq_len);
  const int prefix_end = cdiv(static_cast<int>(m.n_valid), kMmaTile) * kMmaTile;
  const int tail_start = max(static_cast<int>(m.tail_begin) / kMmaTile * kMmaTile, prefix_end);
  const int n_tail = m.tail_begin < L && tail_start < L ? cdiv(L - tail_start, kMmaTile) : 0;
  return {prefix_end / kMmaTile, tail_start, prefix_end / kMmaTile + n_tail};
}

// A CTA's own tile of kMmaTile rows of one (batch, head): where it is, the sample's mask and the
// tiles of the other operand that hold valid tokens.
struct MmaBlock {
  int64_t bh, base;  // (batch, head) and the element offset of its (L, head_dim) slice
  int r0;            // first row of the own tile
  SampleMask m;
  TileList tiles;
  __device__ bool valid(int pos) const { return token_ok(m, pos); }
  __device__ bool empty() const { return !tile_has_tokens(m, r0, kMmaTile); }  // padding only
};

__device__ __forceinline__ MmaBlock mma_block(const Params& p) {
  MmaBlock b;
  b.bh = blockIdx.x;
  b.base = b.bh * p.seq_len * p.head_dim;
  b.r0 = blockIdx.y * kMmaTile;
  b.m = sample_mask(p.mask, b.bh / p.heads, p.seq_len);
  b.tiles = tile_list(b.m);
  return b;
}

// Starts the copies of rows [r0, r0 + kMmaTile) of the slices of `a` and `b` into the shared tiles
// dst and dst + kMmaTile * tile_stride(DP) (rows that are not valid tokens become zeros).
template <typename T, int DP>
__device__ __forceinline__ void copy_pair(T* dst, const T* a, const T* b, const MmaBlock& blk, int r0, int dh) {
  const auto valid = [&blk](int pos) { return blk.valid(pos); };
  mma::copy_rows_async(dst, DP, a + blk.base, dh, r0, kMmaTile, threadIdx.x, blockDim.x, valid);
  mma::copy_rows_async(dst + kMmaTile * mma::tile_stride(DP), DP, b + blk.base, dh, r0, kMmaTile, threadIdx.x,
                       blockDim.x, valid);
}

// Runs body(i) for the tiles i < count, each once its copies have landed (cp.async groups, one per
// tile, issue(0) already committed) and with the copies of tile i + 1 (issue(i + 1), into the other
// buffer) in flight meanwhile. Block-wide barriers around each body: every thread must call this.
template <typename Issue, typename Body>
__device__ __forceinline__ void for_each_tile(int count, Issue issue, Body body) {
  for (int i = 0; i < count; ++i) {
    if (i + 1 < count) {
      issue(i + 1);
      mma::cp_async_wait<1>();
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();
    body(i);
    __syncthreads();  // buffer i & 1 is refilled by the next iteration's issue
  }
}

// Writes zeros to rows [r0, r0 + rows) (those < L) of a (L, head_dim) slice, by the whole CTA.
template <typename T>
__device__ __forceinline__ void zero_rows(T* dst, int dh, int r0, int rows, int L) {
  const int chunks = dh / 8;
  for (int e = threadIdx.x; e < rows * chunks; e += blockDim.x) {
    const int r = e / chunks;
    if (r0 + r < L) *reinterpret_cast<uint4*>(dst + static_cast<int64_t>(r0 + r) * dh + (e - r * chunks) * 8) = uint4{};
  }
}

// Rows g, g + 8 of acc (rows of this warp's 16-row block at r0) times f[h], zeros where not ok[h],
// staged in the warp's own rows of `stage` (no other warp reads them), then stored with 16-byte
// stores to rows < L of the (L, head_dim) slice `dst`.
template <typename T, int DP>
__device__ __forceinline__ void store_block(T* dst, T* stage, float (&acc)[DP / 8][4], int r0, const bool (&ok)[2],
                                            const float (&f)[2], int dh, int L) {
  constexpr int SD = mma::tile_stride(DP);
#pragma unroll
  for (int n = 0; n < DP / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = ok[e >> 1] ? acc[n][e] * f[e >> 1] : 0.f;  // exact zeros
  }
  __syncwarp();
#pragma unroll
  for (int n = 0; n < DP / 8; ++n) mma::store_c(stage, SD, 0, n * 8, acc[n], 1.f, 1.f);
  __syncwarp();
  mma::store_rows_warp(dst, dh, stage, DP, r0, 16, L);
}

template <typename T, int DP>
__global__ void __launch_bounds__(kMmaThreads)
    tiled_fwd_mma_kernel(Params p, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         T* __restrict__ out, float* __restrict__ lse) {
  constexpr int SD = mma::tile_stride(DP);
  constexpr int TILE = kMmaTile * SD;
  extern __shared__ uint4 smem_raw[];
  T* qs = reinterpret_cast<T*>(smem_raw);  // then K, V of buffer 0, K, V of buffer 1
  const int L = p.seq_len, dh = p.head_dim, nkc = cdiv(dh, 16);
  const MmaBlock blk = mma_block(p);
  const int64_t bh = blk.bh, base = blk.base;
  const int m0 = blk.r0;
  const SampleMask& m = blk.m;
  const TileList& tiles = blk.tiles;
  if (blk.empty()) {  // block-uniform: zeros
    zero_rows(out + base, dh, m0, kMmaTile, L);
    for (int r = threadIdx.x; r < kMmaTile && m0 + r < L; r += blockDim.x) lse[bh * L + m0 + r] = 0.f;
    return;
  }
  const auto issue = [&](int i) {
    copy_pair<T, DP>(qs + (1 + 2 * (i & 1)) * TILE, k, v, blk, tiles.start(i), dh);
    mma::cp_async_commit();
  };
  mma::copy_rows_async(qs, DP, q + base, dh, m0, kMmaTile, threadIdx.x, blockDim.x,
                       [&blk](int pos) { return blk.valid(pos); });
  issue(0);  // one group with Q

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2;
  const int w0 = warp * 16;  // this warp's rows in the tile
  float o[DP / 8][4] = {};
  float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for_each_tile(tiles.count, issue, [&](int i) {
    const T* ks = qs + (1 + 2 * (i & 1)) * TILE;
    const T* vs = ks + TILE;
    const int n0 = tiles.start(i);
#pragma unroll 1
    for (int j = 0; j < kMmaTile; j += 16) {
      if (!tile_has_tokens(m, n0 + j, 16)) continue;  // warp-uniform
      float sc[2][4] = {};
      mma::mma_abt<T, DP>(sc, qs, w0, ks, j, nkc);
      uint32_t pa[4];
      mma::online_softmax<T>(sc, p.scale, n0 + j, [&m](int, int key) { return token_ok(m, key); }, mx, l, o, pa);
      mma::mma_ax<T, DP>(o, pa, vs, j, nkc);
    }
  });

  bool ok[2];
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] = mma::quad_sum(l[h]);
    const int row = m0 + w0 + g + 8 * h;
    ok[h] = token_ok(m, row);
    inv[h] = ok[h] ? 1.f / l[h] : 0.f;
    if ((lane & 3) == 0 && row < L) {
      lse[bh * L + row] = !ok[h] ? 0.f : (mx[h] == INFINITY ? mx[h] : mx[h] + logf(l[h]));
    }
  }
  store_block<T, DP>(out + base, qs + w0 * SD, o, m0 + w0, ok, inv, dh, L);
}

template <typename T, int DP>
__global__ void __launch_bounds__(kMmaThreads)
    tiled_bwd_dq_mma_kernel(Params p, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                            const T* __restrict__ out, const float* __restrict__ lse, const T* __restrict__ dout,
                            T* __restrict__ dq, float* __restrict__ delta) {
  constexpr int SD = mma::tile_stride(DP);
  constexpr int TILE = kMmaTile * SD;
  extern __shared__ uint4 smem_raw[];
  T* qs = reinterpret_cast<T*>(smem_raw);  // Q, dO, then K, V of buffer 0, K, V of buffer 1
  T* gs = qs + TILE;
  const int L = p.seq_len, dh = p.head_dim, nkc = cdiv(dh, 16);
  const MmaBlock blk = mma_block(p);
  const int64_t bh = blk.bh, base = blk.base;
  const int m0 = blk.r0;
  const SampleMask& m = blk.m;
  const TileList& tiles = blk.tiles;
  if (blk.empty()) {
    zero_rows(dq + base, dh, m0, kMmaTile, L);
    for (int r = threadIdx.x; r < kMmaTile && m0 + r < L; r += blockDim.x) delta[bh * L + m0 + r] = 0.f;
    return;
  }
  const auto issue = [&](int i) {
    copy_pair<T, DP>(qs + (2 + 2 * (i & 1)) * TILE, k, v, blk, tiles.start(i), dh);
    mma::cp_async_commit();
  };
  copy_pair<T, DP>(qs, q, dout, blk, m0, dh);  // Q, dO
  mma::cp_async_commit();
  issue(0);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2;
  const int w0 = warp * 16;
  mma::cp_async_wait<1>();  // Q and dO have landed
  __syncthreads();
  bool ok[2];
  float lse_h[2], delta_h[2];
  {
    const int own = m0 + w0 + (lane >> 1);  // lanes 2r, 2r + 1 share row r
    const bool own_ok = token_ok(m, own);
    const float d = mma::row_dot_pair(gs + (w0 + (lane >> 1)) * SD, out + base + static_cast<int64_t>(own_ok ? own : 0) * dh,
                                      dh, own_ok);
    if ((lane & 1) == 0 && own < L) delta[bh * L + own] = d;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + w0 + g + 8 * h;
      ok[h] = token_ok(m, row);
      lse_h[h] = ok[h] ? lse[bh * L + row] : 0.f;
      delta_h[h] = __shfl_sync(mma::kFullMask, d, 2 * (g + 8 * h));
    }
  }

  float acc[DP / 8][4] = {};
  for_each_tile(tiles.count, issue, [&](int i) {
    const T* ks = qs + (2 + 2 * (i & 1)) * TILE;
    const T* vs = ks + TILE;
    const int n0 = tiles.start(i);
#pragma unroll 1
    for (int j = 0; j < kMmaTile; j += 16) {
      if (!tile_has_tokens(m, n0 + j, 16)) continue;
      float sc[2][4] = {}, dp[2][4] = {};
      mma::mma_abt<T, DP>(sc, qs, w0, ks, j, nkc);
      mma::mma_abt<T, DP>(dp, gs, w0, vs, j, nkc);
      float ds[2][4];
#pragma unroll
      for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e >> 1;
          const bool allowed = ok[h] && token_ok(m, n0 + j + nb * 8 + 2 * (lane & 3) + (e & 1));
          const float pr = allowed ? __expf(scaled(p.scale, sc[nb][e]) - lse_h[h]) : 0.f;
          ds[nb][e] = allowed ? pr * (dp[nb][e] - delta_h[h]) : 0.f;
        }
      }
      uint32_t dsa[4];
      mma::to_a<T>(dsa, ds[0], ds[1]);
      mma::mma_ax<T, DP>(acc, dsa, ks, j, nkc);
    }
  });
  const float f[2] = {p.scale, p.scale};
  store_block<T, DP>(dq + base, qs + w0 * SD, acc, m0 + w0, ok, f, dh, L);
}

template <typename T, int DP>
__global__ void __launch_bounds__(kMmaThreads)
    tiled_bwd_dkdv_mma_kernel(Params p, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                              const float* __restrict__ lse, const float* __restrict__ delta,
                              const T* __restrict__ dout, T* __restrict__ dk, T* __restrict__ dv) {
  constexpr int SD = mma::tile_stride(DP);
  constexpr int TILE = kMmaTile * SD;
  extern __shared__ uint4 smem_raw[];
  T* ks = reinterpret_cast<T*>(smem_raw);  // K, V, then Q, dO of buffer 0, Q, dO of buffer 1
  T* vs = ks + TILE;
  float* rows_f = reinterpret_cast<float*>(ks + 6 * TILE);  // per buffer: lse[64], delta[64]
  const int L = p.seq_len, dh = p.head_dim, nkc = cdiv(dh, 16);
  const MmaBlock blk = mma_block(p);
  const int64_t bh = blk.bh, base = blk.base;
  const int n0 = blk.r0;
  const SampleMask& m = blk.m;
  const TileList& tiles = blk.tiles;
  if (blk.empty()) {
    zero_rows(dk + base, dh, n0, kMmaTile, L);
    zero_rows(dv + base, dh, n0, kMmaTile, L);
    return;
  }
  const auto issue = [&](int i) {
    const int i0 = tiles.start(i);
    copy_pair<T, DP>(ks + (2 + 2 * (i & 1)) * TILE, q, dout, blk, i0, dh);
    float* lse_s = rows_f + (i & 1) * 2 * kMmaTile;
    for (int r = threadIdx.x; r < kMmaTile; r += blockDim.x) {
      const bool ok = blk.valid(i0 + r);
      const int64_t at = bh * L + (ok ? i0 + r : 0);
      mma::cp_async4(lse_s + r, lse + at, ok);
      mma::cp_async4(lse_s + kMmaTile + r, delta + at, ok);
    }
    mma::cp_async_commit();
  };
  copy_pair<T, DP>(ks, k, v, blk, n0, dh);  // K, V: one group with the first query tile
  issue(0);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int w0 = warp * 16;  // this warp's key rows in the tile
  bool ok[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) ok[h] = token_ok(m, n0 + w0 + g + 8 * h);
  float acc_k[DP / 8][4] = {}, acc_v[DP / 8][4] = {};
  for_each_tile(tiles.count, issue, [&](int i) {
    const T* qs = ks + (2 + 2 * (i & 1)) * TILE;
    const T* gs = qs + TILE;
    const float* lse_s = rows_f + (i & 1) * 2 * kMmaTile;
    const float* delta_s = lse_s + kMmaTile;
    const int i0 = tiles.start(i);
#pragma unroll 1
    for (int j = 0; j < kMmaTile; j += 16) {
      if (!tile_has_tokens(m, i0 + j, 16)) continue;
      float sc[2][4] = {}, dp[2][4] = {};  // rows: keys; columns: queries
      mma::mma_abt<T, DP>(sc, ks, w0, qs, j, nkc);
      mma::mma_abt<T, DP>(dp, vs, w0, gs, j, nkc);
      float pr[2][4], ds[2][4];
#pragma unroll
      for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = j + nb * 8 + 2 * t + (e & 1);  // query row in the tile
          const bool allowed = ok[e >> 1] && token_ok(m, i0 + c);
          pr[nb][e] = allowed ? __expf(scaled(p.scale, sc[nb][e]) - lse_s[c]) : 0.f;
          ds[nb][e] = allowed ? pr[nb][e] * (dp[nb][e] - delta_s[c]) : 0.f;
        }
      }
      uint32_t pa[4], dsa[4];
      mma::to_a<T>(pa, pr[0], pr[1]);
      mma::to_a<T>(dsa, ds[0], ds[1]);
      mma::mma_ax<T, DP>(acc_v, pa, gs, j, nkc);
      mma::mma_ax<T, DP>(acc_k, dsa, qs, j, nkc);
    }
  });
  const float fk[2] = {p.scale, p.scale}, fv[2] = {1.f, 1.f};
  store_block<T, DP>(dk + base, ks + w0 * SD, acc_k, n0 + w0, ok, fk, dh, L);
  store_block<T, DP>(dv + base, vs + w0 * SD, acc_v, n0 + w0, ok, fv, dh, L);
}

Params params(const AttentionProblem& s) { return kernel_problem(s, s.head_dim + 1); }

// A grid of one block of `threads` per `rows`-row tile of each (batch, head): the CUDA-core kernels
// (kRows, kThreads) and the tensor-core ones (kMmaTile, kMmaThreads).
LaunchConfig tile_grid(const Params& p, int64_t batch_heads, size_t smem, int rows = kRows, int threads = kThreads) {
  return {dim3(static_cast<unsigned>(batch_heads), static_cast<unsigned>(cdiv(p.seq_len, rows))), dim3(threads),
          smem};
}

// Shared memory of a kernel with `tiles` (kRows, stride) tiles, `squares` (kRows, kRows + 1) and
// `vectors` kRows-float arrays. At head_dim 128: 4 tiles + 2 squares + 2 vectors = 35 KB (< 48 KB).
size_t smem_bytes(const Params& p, int tiles, int squares, int vectors) {
  return sizeof(float) * (static_cast<size_t>(tiles) * kRows * p.stride +
                          static_cast<size_t>(squares) * kRows * (kRows + 1) + static_cast<size_t>(vectors) * kRows);
}

// Tensor-core launches: `tiles` (kMmaTile, DP) 16-bit shared tiles and `floats` floats per CTA.
template <int DP>
LaunchConfig mma_grid(const Params& p, int64_t batch_heads, int tiles, int floats) {
  const size_t smem = sizeof(uint16_t) * tiles * kMmaTile * mma::tile_stride(DP) + sizeof(float) * floats;
  return tile_grid(p, batch_heads, smem, kMmaTile, kMmaThreads);
}

void forward_mma(const AttentionForward& a, cudaStream_t stream) {
  dispatch_mma(a.problem.dtype, a.problem.head_dim, [&](auto type, auto dp) {
    using T = typename decltype(type)::type;
    constexpr int DP = decltype(dp)::value;
    const Params p = kernel_problem(a.problem, mma::tile_stride(DP));
    launch("tiled_fwd_mma_kernel", tiled_fwd_mma_kernel<T, DP>,
           mma_grid<DP>(p, a.problem.batch * a.problem.heads, 5, 0), stream, p, static_cast<const T*>(a.q),
           static_cast<const T*>(a.k), static_cast<const T*>(a.v), static_cast<T*>(a.out), static_cast<float*>(a.lse));
  });
}

void backward_mma(const AttentionBackward& a, cudaStream_t stream) {
  dispatch_mma(a.problem.dtype, a.problem.head_dim, [&](auto type, auto dp) {
    using T = typename decltype(type)::type;
    constexpr int DP = decltype(dp)::value;
    const Params p = kernel_problem(a.problem, mma::tile_stride(DP));
    const auto q = static_cast<const T*>(a.q);
    const auto k = static_cast<const T*>(a.k);
    const auto v = static_cast<const T*>(a.v);
    const auto dout = static_cast<const T*>(a.dout);
    const auto lse = static_cast<const float*>(a.lse);
    const int64_t batch_heads = a.problem.batch * a.problem.heads;
    launch("tiled_bwd_dq_mma_kernel", tiled_bwd_dq_mma_kernel<T, DP>, mma_grid<DP>(p, batch_heads, 6, 0), stream, p,
           q, k, v, static_cast<const T*>(a.out), lse, dout, static_cast<T*>(a.dq), a.workspace);
    // Same stream: runs after the dq kernel has written delta.
    launch("tiled_bwd_dkdv_mma_kernel", tiled_bwd_dkdv_mma_kernel<T, DP>,
           mma_grid<DP>(p, batch_heads, 6, 4 * kMmaTile), stream, p, q, k, v, lse, a.workspace, dout,
           static_cast<T*>(a.dk), static_cast<T*>(a.dv));
  });
}

template <typename T>
void forward(const AttentionForward& a, cudaStream_t stream) {
  const Params p = params(a.problem);
  launch("tiled_fwd_kernel", tiled_fwd_kernel<T>, tile_grid(p, a.problem.batch * a.problem.heads, smem_bytes(p, 3, 1, 3)),
         stream, p, static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
         static_cast<T*>(a.out), static_cast<float*>(a.lse));
}

template <typename T>
void backward(const AttentionBackward& a, cudaStream_t stream) {
  const Params p = params(a.problem);
  const auto q = static_cast<const T*>(a.q);
  const auto k = static_cast<const T*>(a.k);
  const auto v = static_cast<const T*>(a.v);
  const auto dout = static_cast<const T*>(a.dout);
  const auto lse = static_cast<const float*>(a.lse);
  const int64_t batch_heads = a.problem.batch * a.problem.heads;
  const int64_t rows = batch_heads * a.problem.seq_len;
  launch("tiled_delta_kernel", tiled_delta_kernel<T>, {dim3(static_cast<unsigned>(cdiv(rows, 256))), dim3(256), 0},
         stream, p, rows, static_cast<const T*>(a.out), dout, a.workspace);
  launch("tiled_bwd_dq_kernel", tiled_bwd_dq_kernel<T>, tile_grid(p, batch_heads, smem_bytes(p, 4, 1, 2)), stream, p,
         q, k, v, lse, a.workspace, dout, static_cast<T*>(a.dq));
  launch("tiled_bwd_dkdv_kernel", tiled_bwd_dkdv_kernel<T>, tile_grid(p, batch_heads, smem_bytes(p, 4, 2, 2)), stream,
         p, q, k, v, lse, a.workspace, dout, static_cast<T*>(a.dk), static_cast<T*>(a.dv));
}

}  // namespace

void tiled_attention_fwd_cuda(const AttentionForward& args) {
  if (mma_eligible(args.problem, args.q, args.k, args.v, args.out)) {
    return forward_mma(args, static_cast<cudaStream_t>(args.exec.stream));
  }
  dispatch_dtype(args.problem.dtype, [&](auto type) {
    forward<typename decltype(type)::type>(args, static_cast<cudaStream_t>(args.exec.stream));
  });
}

void tiled_attention_bwd_cuda(const AttentionBackward& args) {
  if (args.workspace == nullptr) throw std::invalid_argument("bottleneck attention (cuda): workspace is null");
  if (mma_eligible(args.problem, args.q, args.k, args.v, args.out, args.dout, args.dq, args.dk, args.dv)) {
    return backward_mma(args, static_cast<cudaStream_t>(args.exec.stream));
  }
  dispatch_dtype(args.problem.dtype, [&](auto type) {
    backward<typename decltype(type)::type>(args, static_cast<cudaStream_t>(args.exec.stream));
  });
}

}  // namespace zsar
