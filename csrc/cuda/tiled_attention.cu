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

// Whether the tile of rows [r0, r0 + kRows) holds a valid token.
__device__ __forceinline__ bool tile_has_tokens(const SampleMask& m, int r0) {
  return r0 < m.n_valid || (r0 + kRows > m.tail_begin && r0 < m.seq_len);
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

Params params(const AttentionProblem& s) { return kernel_problem(s, s.head_dim + 1); }

// A grid of one block per kRows-row tile of each (batch, head).
LaunchConfig tile_grid(const Params& p, int64_t batch_heads, size_t smem) {
  return {dim3(static_cast<unsigned>(batch_heads), static_cast<unsigned>(cdiv(p.seq_len, kRows))), dim3(kThreads),
          smem};
}

// Shared memory of a kernel with `tiles` (kRows, stride) tiles, `squares` (kRows, kRows + 1) and
// `vectors` kRows-float arrays. At head_dim 128: 4 tiles + 2 squares + 2 vectors = 35 KB (< 48 KB).
size_t smem_bytes(const Params& p, int tiles, int squares, int vectors) {
  return sizeof(float) * (static_cast<size_t>(tiles) * kRows * p.stride +
                          static_cast<size_t>(squares) * kRows * (kRows + 1) + static_cast<size_t>(vectors) * kRows);
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
  dispatch_dtype(args.problem.dtype, [&](auto type) {
    forward<typename decltype(type)::type>(args, static_cast<cudaStream_t>(args.exec.stream));
  });
}

void tiled_attention_bwd_cuda(const AttentionBackward& args) {
  if (args.workspace == nullptr) throw std::invalid_argument("bottleneck attention (cuda): workspace is null");
  dispatch_dtype(args.problem.dtype, [&](auto type) {
    backward<typename decltype(type)::type>(args, static_cast<cudaStream_t>(args.exec.stream));
  });
}

}  // namespace zsar
