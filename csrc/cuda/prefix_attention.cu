// CUDA kernels of the fused masked attention; the mask kinds and arguments are in
// csrc/include/zsar/attention.h.
//
// Tuned for short sequences (ResT: L ~ 25). All arithmetic is float (fp16/bf16 converted on load,
// rounded once on store), so the kernels are bound by shared-memory bandwidth and FMA issue rather
// than by DRAM; the layouts below maximise the FMAs per value read from shared memory.
//
// Every kernel gives a warp R = 4 * RB consecutive rows (query rows for the forward and dq, key rows
// for dk/dv); a block covers `warps` warps of rows of one (batch, head) and streams 32-row tiles of
// the other operand through shared memory as float, only as far as the prefix mask lets any of its
// rows reach (a single tile for ResT). Two lane layouts per warp:
//  * dot products (scores, dout . v): lane (t, g) computes rows g + 4 b (b < RB) against tile rows
//    t + 8 a (a < 4), so each float4 read of a tile row feeds 2 * RB rows and each read of a row feeds
//    4 tile rows. t and g are taken from the lane bits so that lanes 2n and 2n + 1 share t and lanes
//    n and n ^ 2 share g: every read has pairs of equal addresses, which shared memory can serve at
//    twice the rate (its return path, 128 bytes per clock, is what bounds these kernels).
//  * accumulations (out, dq, dk, dv): lane owns the columns lane + 32 c (c < NC = ceil(Dh / 32)) of
//    all R rows; the per-(tile row, row) weights go through a per-warp shared scratch and are read
//    back as float4 broadcasts.
// Shared rows have a stride of `stride` floats: a multiple of 4 (float4 access) with stride / 4 odd,
// so 8 float4 reads of 8 consecutive rows hit 8 different bank groups. Columns [Dh, stride) are
// zeroed once so that dot products can run over whole float4.

#include "zsar/attention.h"
#include "convert.cuh"
#include "launch.cuh"
#include "mma.cuh"
#include "tiled_attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace zsar {
namespace {

constexpr int kWarpSize = 32;
constexpr int kTile = kWarpSize;  // rows per streamed tile
constexpr int kTileLanes = 8;     // dot layout: lanes along the tile, each with kTile / 8 tile rows
constexpr int kTileSlots = kTile / kTileLanes;
constexpr int kGroups = kWarpSize / kTileLanes;  // dot layout: row groups; warp rows = kGroups * RB
constexpr int kMaxHeadDim = 128;
constexpr int kMaxBlockRows = 32;  // a whole ResT sequence in one block
// Blocks are sized so that two 256-thread (or four 128-thread) blocks fit an SM: at most 128
// registers, which the kernels fit without spilling.
constexpr int kMinThreadsPerSm = 512;
constexpr unsigned kFullMask = 0xffffffffu;
// The default dynamic shared memory limit; staying under it needs no per-device opt-in.
constexpr size_t kSmemLimit = 48 * 1024;

// Rows per warp: 8 while the accumulators of 8 rows fit in registers, else 4.
constexpr int quads_per_warp(int nc) { return nc <= 2 ? 2 : 1; }
constexpr int max_threads(int rb) { return kMaxBlockRows / (kGroups * rb) * kWarpSize; }
// The dk/dv kernel holds two accumulator sets; with 8 rows per warp (head_dim <= 64) 128 registers
// leave it spilling (ptxas -v: 4 bytes), so it asks for 3 blocks of 128 threads per SM (170 registers).
constexpr int dkv_min_blocks(int rb) { return rb == 2 ? 3 : kMinThreadsPerSm / max_threads(rb); }

// Dot layout of a lane (bits b4..b0): tile lane t = b3 b2 b1, row group g = b4 b0.
__device__ __forceinline__ int tile_lane(int lane) { return (lane >> 1) & (kTileLanes - 1); }
__device__ __forceinline__ int row_group(int lane) { return (lane & 1) | ((lane >> 3) & 2); }

// Launch geometry and mask parameters shared by the kernels.
struct Problem : KernelProblem {
  int row_blocks;  // blocks per (batch, head)
  bool vec;  // rows may be read 4 elements at a time (head_dim % 4 == 0 and aligned base pointers)
};

// The (batch, head) and first row of this block, and the mask of its sample.
struct BlockRows {
  int64_t bh;
  int r0;
  SampleMask mask;
};

__device__ __forceinline__ BlockRows block_rows(const Problem& p, int warp_rows) {
  const int64_t bh = blockIdx.x / static_cast<unsigned>(p.row_blocks);
  const int rb = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.row_blocks));
  return {bh, rb * static_cast<int>(blockDim.x / kWarpSize) * warp_rows,
          sample_mask(p.mask, bh / p.heads, p.seq_len)};
}

// key_end of query row i, 0 past the sequence.
__device__ __forceinline__ int key_end(const Problem& p, const SampleMask& m, int i) {
  return i < p.seq_len ? static_cast<int>(m.key_end(i)) : 0;
}

// How far the query rows [r0, r0 + rows) reach into the keys (key_end is not monotone: padding rows
// have 0), i.e. how many keys they must stream.
__device__ __forceinline__ int rows_key_end(const Problem& p, const SampleMask& m, int r0, int rows) {
  int end = 0;
  for (int r = r0; r < r0 + rows; ++r) end = max(end, key_end(p, m, r));
  return end;
}

__device__ __forceinline__ float2 to_float2(__half2 x) { return __half22float2(x); }
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 x) { return __bfloat1622float2(x); }

// Four consecutive elements as float, in one load; `p` is aligned to 4 elements.
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
template <typename T2>  // __half2 or __nv_bfloat162
__device__ __forceinline__ float4 load4_16bit(const void* p) {
  const uint2 raw = *static_cast<const uint2*>(p);
  T2 lo, hi;
  memcpy(&lo, &raw.x, sizeof lo);  // bit casts; the load stays one 8-byte access
  memcpy(&hi, &raw.y, sizeof hi);
  const float2 a = to_float2(lo);
  const float2 b = to_float2(hi);
  return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ float4 load4(const __half* p) { return load4_16bit<__half2>(p); }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
  return load4_16bit<__nv_bfloat162>(p);
}

__device__ __forceinline__ float* dynamic_smem() {
  extern __shared__ float4 smem[];  // float4: 16-byte alignment for the float4 accesses
  return reinterpret_cast<float*>(smem);
}

__device__ __forceinline__ const float4& as_float4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}

__device__ __forceinline__ float dot4(const float4& a, const float4& b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

__device__ __forceinline__ float component(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// `rows` contiguous global rows of head_dim elements -> shared rows at `dst`.
template <typename T>
struct Segment {
  float* dst;
  const T* src;
  int rows;
};

// Copies N segments to shared memory as float, by the whole block. Each iteration issues the loads
// of every segment before storing any, so their latencies overlap.
template <typename T, int N>
__device__ __forceinline__ void load_segments(const Segment<T> (&seg)[N], const Problem& p) {
  const int dh = p.head_dim;
  const int step = p.vec ? 4 : 1;  // with vec, dh % 4 == 0: a float4 never straddles two rows
  int n = 0;
#pragma unroll
  for (int s = 0; s < N; ++s) n = max(n, seg[s].rows * dh);
  for (int e = threadIdx.x * step; e < n; e += blockDim.x * step) {
    float4 f[N];
#pragma unroll
    for (int s = 0; s < N; ++s) {
      if (e < seg[s].rows * dh) {
        f[s] = p.vec ? load4(seg[s].src + e) : make_float4(to_float(seg[s].src[e]), 0.f, 0.f, 0.f);
      }
    }
    const int r = e / dh;
    const int offset = r * p.stride + (e - r * dh);
#pragma unroll
    for (int s = 0; s < N; ++s) {
      if (e < seg[s].rows * dh) {
        if (p.vec) {
          *reinterpret_cast<float4*>(seg[s].dst + offset) = f[s];
        } else {
          seg[s].dst[offset] = f[s].x;
        }
      }
    }
  }
}

// Zeroes columns [head_dim, stride) of `rows` shared rows. Loads never write them, so once is enough.
__device__ __forceinline__ void zero_padding(float* base, int rows, const Problem& p) {
  const int pad = p.stride - p.head_dim;
  for (int e = threadIdx.x; e < rows * pad; e += blockDim.x) {
    base[(e / pad) * p.stride + p.head_dim + e % pad] = 0.f;
  }
}

// Dot layout: acc[b][a] += rows[g + 4 b] . tile[t + 8 a] over n4 floats (a multiple of 4), with
// `rows` the warp's 4 * RB shared rows and `tile` the 32 tile rows.
template <int RB>
__device__ __forceinline__ void dot_tile(const float* rows, const float* tile, int stride, int n4,
                                         float (&acc)[RB][kTileSlots]) {
  const int lane = threadIdx.x % kWarpSize;
  const float* rp = rows + row_group(lane) * stride;
  const float* tp = tile + tile_lane(lane) * stride;
#pragma unroll 1  // unrolling holds more float4 in flight and spills the backward kernels
  for (int d = 0; d < n4; d += 4) {
    float4 x[RB];
#pragma unroll
    for (int b = 0; b < RB; ++b) x[b] = as_float4(rp + b * kGroups * stride + d);
#pragma unroll
    for (int a = 0; a < kTileSlots; ++a) {
      const float4 y = as_float4(tp + a * kTileLanes * stride + d);
#pragma unroll
      for (int b = 0; b < RB; ++b) acc[b][a] += dot4(x[b], y);
    }
  }
}

// Reductions over the 8 lanes of a row group (lane bits b3 b2 b1).
__device__ __forceinline__ float group_max(float x) {
  for (int o = 2; o <= 8; o <<= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}
__device__ __forceinline__ float group_sum(float x) {
  for (int o = 2; o <= 8; o <<= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = kWarpSize / 2; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}

// Accumulation layout: acc[r][c] += w[j][r] * tile[j][lane + 32 c] for the tile rows j in
// [j_begin, j_end), with w the per-warp scratch of R weights per tile row.
template <int R, int NC>
__device__ __forceinline__ void accumulate(const float* w, const float* tile, int stride, int dh,
                                           int j_begin, int j_end, float (&acc)[R][NC]) {
  const int lane = threadIdx.x % kWarpSize;
  for (int j = j_begin; j < j_end; ++j) {
    float4 wj[R / 4];
#pragma unroll
    for (int b = 0; b < R / 4; ++b) wj[b] = as_float4(w + j * R + 4 * b);
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = lane + c * kWarpSize;
      if (d < dh) {
        const float x = tile[j * stride + d];
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][c] += component(wj[r / 4], r % 4) * x;
      }
    }
  }
}

// Writes rows [row0, row0 + R) of a (B, H, L, Dh) output from the accumulation layout, scaled;
// rows at or past n_valid (padding) are written as exact zeros: their sums may hold 0 * inf from
// a non-finite value of a valid row.
template <typename T, int R, int NC>
__device__ __forceinline__ void store_rows(T* dst, int row0, int L, int n_valid, int dh, float scale,
                                           const float (&acc)[R][NC]) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (row0 + r < L) {
      const bool valid = row0 + r < n_valid;
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int d = lane + c * kWarpSize;
        if (d < dh) dst[int64_t{row0 + r} * dh + d] = from_float<T>(valid ? acc[r][c] * scale : 0.f);
      }
    }
  }
}

// out_i = softmax(scale * q_i K^T) V over the keys [0, key_end(i)), with an online softmax over
// the key tiles; lse_i = log-sum-exp of the scaled scores. Padding rows: out = 0, lse = 0.
template <typename T, int NC, int RB = quads_per_warp(NC)>
__global__ void __launch_bounds__(max_threads(RB), kMinThreadsPerSm / max_threads(RB))
    prefix_attention_fwd_kernel(Problem p, const T* __restrict__ q, const T* __restrict__ k,
                                const T* __restrict__ v, T* __restrict__ out,
                                float* __restrict__ lse) {
  constexpr int R = kGroups * RB;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int g = row_group(lane);  // dot layout: rows g + 4 b
  const int t = tile_lane(lane);  // dot layout: tile rows t + 8 a
  const int warps = blockDim.x / kWarpSize;
  const int L = p.seq_len;
  const int dh = p.head_dim;
  const int S = p.stride;
  const int dh4 = (dh + 3) & ~3;
  const BlockRows blk = block_rows(p, R);
  const int64_t base = blk.bh * L * dh;
  const int block_n = max(0, min(warps * R, L - blk.r0));  // query rows of the block
  const int kend_blk = rows_key_end(p, blk.mask, blk.r0, warps * R);
  const int row0 = blk.r0 + warp * R;  // this warp's first query row
  const int kend_warp = rows_key_end(p, blk.mask, row0, R);
  int kend[RB];
#pragma unroll
  for (int b = 0; b < RB; ++b) kend[b] = key_end(p, blk.mask, row0 + g + kGroups * b);

  float* ks = dynamic_smem();      // kTile x S
  float* vs = ks + kTile * S;      // kTile x S
  float* qs_blk = vs + kTile * S;  // warps * R x S: the block's query rows
  float* qs = qs_blk + warp * R * S;
  float* ps = qs_blk + warps * R * S + warp * (kTile + 1) * R;  // p[j][r], then R row factors
  float* fs = ps + kTile * R;
  zero_padding(ks, 2 * kTile + warps * R, p);

  float m[RB];  // running max of the scores of rows g + 4 b
  float l[RB];  // this lane's part of the running sum of exp(score - m)
  float acc[R][NC] = {};
#pragma unroll
  for (int b = 0; b < RB; ++b) {
    m[b] = -INFINITY;
    l[b] = 0.f;
  }
  for (int t0 = 0; t0 < kend_blk; t0 += kTile) {
    const int rows = min(kTile, kend_blk - t0);
    __syncthreads();  // the previous tile is consumed
    const Segment<T> seg[3] = {{ks, k + base + int64_t{t0} * dh, rows},
                               {vs, v + base + int64_t{t0} * dh, rows},
                               {qs_blk, q + base + int64_t{blk.r0} * dh, t0 == 0 ? block_n : 0}};
    load_segments(seg, p);
    __syncthreads();
    const int nj = min(kTile, kend_warp - t0);  // keys of the tile that some row of the warp sees
    if (nj > 0) {                               // warp-uniform
      float s[RB][kTileSlots] = {};
      dot_tile(qs, ks, S, dh4, s);
#pragma unroll
      for (int b = 0; b < RB; ++b) {
        // Scores outside the mask are never used: tile rows >= nj and rows past L hold stale data.
        bool valid[kTileSlots];
        float sv[kTileSlots];
        float tile_max = -INFINITY;
#pragma unroll
        for (int a = 0; a < kTileSlots; ++a) {
          valid[a] = t + kTileLanes * a < kend[b] - t0;
          sv[a] = valid[a] ? scaled(p.scale, s[b][a]) : -INFINITY;
          tile_max = fmaxf(tile_max, sv[a]);
        }
        tile_max = group_max(tile_max);
        // An active row sees key t0, so its max is finite and exp never sees -inf - -inf.
        const bool active = t0 < kend[b];
        const float m_new = active ? fmaxf(m[b], tile_max) : m[b];
        const float factor = active ? expf(m[b] - m_new) : 1.f;  // 0 on a row's first tile
        float sum = 0.f;
#pragma unroll
        for (int a = 0; a < kTileSlots; ++a) {
          const float pr = valid[a] ? expf(sv[a] - m_new) : 0.f;
          ps[(t + kTileLanes * a) * R + g + kGroups * b] = pr;
          sum += pr;
        }
        l[b] = l[b] * factor + sum;
        m[b] = m_new;
        if (t == 0) fs[g + kGroups * b] = factor;
      }
      __syncwarp();
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float factor = fs[r];
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[r][c] *= factor;
      }
      accumulate(ps, vs, S, dh, 0, nj, acc);
    }
  }

  __syncwarp();  // fs is read by the accumulation above
#pragma unroll
  for (int b = 0; b < RB; ++b) {
    const float sum = group_sum(l[b]);
    const int i = row0 + g + kGroups * b;
    if (t == 0) {
      fs[g + kGroups * b] = kend[b] > 0 ? 1.f / sum : 0.f;  // acc = 0 on padding rows: exact zeros
      // A +inf score gives m = +inf and a NaN sum: lse is +inf then, as in torch.logsumexp.
      if (i < L) lse[blk.bh * L + i] = kend[b] > 0 ? (m[b] == INFINITY ? m[b] : m[b] + logf(sum)) : 0.f;
    }
  }
  __syncwarp();
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float inv = fs[r];
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[r][c] *= inv;
  }
  store_rows(out + base, row0, L, static_cast<int>(blk.mask.n_valid), dh, 1.f, acc);
}

// Backward, per query row i: delta_i = dout_i . out_i (stored for the dk/dv kernel) and
// dq_i = scale * sum_j p_ij (dout_i . v_j - delta_i) k_j. Padding rows: dq = 0, delta = 0.
template <typename T, int NC, int RB = quads_per_warp(NC)>
__global__ void __launch_bounds__(max_threads(RB), kMinThreadsPerSm / max_threads(RB))
    prefix_attention_bwd_dq_kernel(Problem p, const T* __restrict__ q, const T* __restrict__ k,
                                   const T* __restrict__ v, const T* __restrict__ out,
                                   const float* __restrict__ lse, const T* __restrict__ dout,
                                   T* __restrict__ dq, float* __restrict__ delta) {
  constexpr int R = kGroups * RB;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int g = row_group(lane);
  const int t = tile_lane(lane);
  const int warps = blockDim.x / kWarpSize;
  const int L = p.seq_len;
  const int dh = p.head_dim;
  const int S = p.stride;
  const int dh4 = (dh + 3) & ~3;
  const BlockRows blk = block_rows(p, R);
  const int64_t base = blk.bh * L * dh;
  const int block_n = max(0, min(warps * R, L - blk.r0));
  const int kend_blk = rows_key_end(p, blk.mask, blk.r0, warps * R);
  const int row0 = blk.r0 + warp * R;
  const int kend_warp = rows_key_end(p, blk.mask, row0, R);
  int kend[RB];
  float lse_b[RB];
#pragma unroll
  for (int b = 0; b < RB; ++b) {
    kend[b] = key_end(p, blk.mask, row0 + g + kGroups * b);
    lse_b[b] = kend[b] > 0 ? lse[blk.bh * L + row0 + g + kGroups * b] : 0.f;
  }
  // Accumulation layout: this lane's columns of the out rows, for delta.
  bool has_keys[R];  // warp-uniform: the row is not padding
  float o_r[R][NC];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    has_keys[r] = key_end(p, blk.mask, row0 + r) > 0;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = lane + c * kWarpSize;
      o_r[r][c] = has_keys[r] && d < dh ? to_float(out[base + int64_t{row0 + r} * dh + d]) : 0.f;
    }
  }

  float* ks = dynamic_smem();              // kTile x S
  float* vs = ks + kTile * S;              // kTile x S
  float* qs_blk = vs + kTile * S;          // warps * R x S: the block's query rows
  float* gs_blk = qs_blk + warps * R * S;  // warps * R x S: the block's dout rows
  float* qs = qs_blk + warp * R * S;
  float* gs = gs_blk + warp * R * S;
  float* dss = gs_blk + warps * R * S + warp * kTile * R;  // ds[j][r]
  zero_padding(ks, 2 * kTile + 2 * warps * R, p);

  float delta_b[RB] = {};  // delta of rows g + 4 b (dot layout)
  float acc[R][NC] = {};
  for (int t0 = 0; t0 < kend_blk; t0 += kTile) {
    const int rows = min(kTile, kend_blk - t0);
    const int first_n = t0 == 0 ? block_n : 0;
    __syncthreads();  // the previous tile is consumed
    const Segment<T> seg[4] = {{ks, k + base + int64_t{t0} * dh, rows},
                               {vs, v + base + int64_t{t0} * dh, rows},
                               {qs_blk, q + base + int64_t{blk.r0} * dh, first_n},
                               {gs_blk, dout + base + int64_t{blk.r0} * dh, first_n}};
    load_segments(seg, p);
    __syncthreads();
    if (t0 == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float part = 0.f;
        if (has_keys[r]) {  // padding rows have delta 0 (and stale dout rows past L)
#pragma unroll
          for (int c = 0; c < NC; ++c) {
            const int d = lane + c * kWarpSize;
            if (d < dh) part += gs[r * S + d] * o_r[r][c];
          }
        }
        const float delta_r = warp_sum(part);
        if (lane == 0 && row0 + r < L) delta[blk.bh * L + row0 + r] = delta_r;
#pragma unroll
        for (int b = 0; b < RB; ++b) {
          if (r == g + kGroups * b) delta_b[b] = delta_r;
        }
      }
    }
    const int nj = min(kTile, kend_warp - t0);
    if (nj > 0) {  // warp-uniform
      float s[RB][kTileSlots] = {};
      float dp[RB][kTileSlots] = {};
      dot_tile(qs, ks, S, dh4, s);
      dot_tile(gs, vs, S, dh4, dp);
#pragma unroll
      for (int b = 0; b < RB; ++b) {
#pragma unroll
        for (int a = 0; a < kTileSlots; ++a) {
          const int j = t + kTileLanes * a;
          dss[j * R + g + kGroups * b] =
              j < kend[b] - t0 ? expf(scaled(p.scale, s[b][a]) - lse_b[b]) * (dp[b][a] - delta_b[b]) : 0.f;
        }
      }
      __syncwarp();
      accumulate(dss, ks, S, dh, 0, nj, acc);
    }
  }

  if (kend_blk == 0 && lane == 0) {  // only padding rows: the loop above never wrote delta
    for (int r = row0; r < min(row0 + R, L); ++r) delta[blk.bh * L + r] = 0.f;
  }
  store_rows(dq + base, row0, L, static_cast<int>(blk.mask.n_valid), dh, p.scale, acc);
}

// Backward, per key row j: dv_j = sum_i p_ij dout_i and dk_j = scale * sum_i ds_ij q_i over the
// queries i that attend j. Keys no query attends get dk = dv = 0.
template <typename T, int NC, int RB = quads_per_warp(NC)>
__global__ void __launch_bounds__(max_threads(RB), dkv_min_blocks(RB))
    prefix_attention_bwd_dkv_kernel(Problem p, const T* __restrict__ q, const T* __restrict__ k,
                                    const T* __restrict__ v, const float* __restrict__ lse,
                                    const float* __restrict__ delta, const T* __restrict__ dout,
                                    T* __restrict__ dk, T* __restrict__ dv) {
  constexpr int R = kGroups * RB;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int g = row_group(lane);  // dot layout: key rows g + 4 b
  const int t = tile_lane(lane);  // dot layout: tile (query) rows t + 8 a
  const int warps = blockDim.x / kWarpSize;
  const int L = p.seq_len;
  const int dh = p.head_dim;
  const int S = p.stride;
  const int dh4 = (dh + 3) & ~3;
  const BlockRows blk = block_rows(p, R);
  const int64_t base = blk.bh * L * dh;
  const int64_t row_base = blk.bh * L;  // (b, h) offset into lse and delta
  const int block_n = max(0, min(warps * R, L - blk.r0));  // key rows of the block
  const int row0 = blk.r0 + warp * R;                       // this warp's first key row
  const int n_valid = static_cast<int>(blk.mask.n_valid);
  const int n_fixed = static_cast<int>(blk.mask.n_fixed);

  // Queries attending a key j0 form [lo, hi) and include those attending any later key (the masks
  // are prefixes): in rest mode a key j0 >= n_visual is seen only by the words i >= j0, any other
  // valid key by every valid query. Applied to the first key of the block and of the warp.
  const int q_lo = (blk.mask.full || blk.r0 < n_fixed) ? 0 : blk.r0;
  const int q_hi = blk.r0 < n_valid ? n_valid : 0;
  const int w_lo = (blk.mask.full || row0 < n_fixed) ? 0 : row0;
  const int w_hi = row0 < n_valid ? n_valid : 0;

  float* qt = dynamic_smem();              // kTile x S, query tile
  float* gt = qt + kTile * S;              // kTile x S, dout tile
  float* ks_blk = gt + kTile * S;          // warps * R x S: the block's key rows
  float* vs_blk = ks_blk + warps * R * S;  // warps * R x S: the block's value rows
  float* ks = ks_blk + warp * R * S;
  float* vs = vs_blk + warp * R * S;
  float* ps = vs_blk + warps * R * S + warp * 2 * kTile * R;  // p[i][r]
  float* dss = ps + kTile * R;                                // ds[i][r]
  zero_padding(qt, 2 * kTile + 2 * warps * R, p);

  float acc_k[R][NC] = {};
  float acc_v[R][NC] = {};
  for (int t0 = q_lo; t0 < q_hi; t0 += kTile) {
    const int rows = min(kTile, q_hi - t0);
    const int first_n = t0 == q_lo ? block_n : 0;
    // Issued before the tile load so that their latency overlaps it.
    float lse_a[kTileSlots];
    float delta_a[kTileSlots];
#pragma unroll
    for (int a = 0; a < kTileSlots; ++a) {
      const int i = t + kTileLanes * a;
      lse_a[a] = i < rows ? lse[row_base + t0 + i] : 0.f;
      delta_a[a] = i < rows ? delta[row_base + t0 + i] : 0.f;
    }
    __syncthreads();  // the previous tile is consumed
    const Segment<T> seg[4] = {{qt, q + base + int64_t{t0} * dh, rows},
                               {gt, dout + base + int64_t{t0} * dh, rows},
                               {ks_blk, k + base + int64_t{blk.r0} * dh, first_n},
                               {vs_blk, v + base + int64_t{blk.r0} * dh, first_n}};
    load_segments(seg, p);
    __syncthreads();
    const int i_begin = max(0, w_lo - t0);  // tile rows that may attend a key of the warp
    const int i_end = min(rows, w_hi - t0);
    if (i_begin < i_end) {  // warp-uniform
      float s[RB][kTileSlots] = {};
      float dp[RB][kTileSlots] = {};
      dot_tile(ks, qt, S, dh4, s);
      dot_tile(vs, gt, S, dh4, dp);
#pragma unroll
      for (int b = 0; b < RB; ++b) {
        const int j = row0 + g + kGroups * b;
#pragma unroll
        for (int a = 0; a < kTileSlots; ++a) {
          const int i = t + kTileLanes * a;
          // Rows past L and tile rows past `rows` hold stale data: keep it out of the arithmetic.
          const bool attends = i < rows && j < L && j < blk.mask.key_end(t0 + i);
          const float pr = attends ? expf(scaled(p.scale, s[b][a]) - lse_a[a]) : 0.f;
          ps[i * R + g + kGroups * b] = pr;
          dss[i * R + g + kGroups * b] = attends ? pr * (dp[b][a] - delta_a[a]) : 0.f;
        }
      }
      __syncwarp();
      accumulate(ps, gt, S, dh, i_begin, i_end, acc_v);
      accumulate(dss, qt, S, dh, i_begin, i_end, acc_k);
    }
  }

  store_rows(dk + base, row0, L, n_valid, dh, p.scale, acc_k);
  store_rows(dv + base, row0, L, n_valid, dh, 1.f, acc_v);
}

// ---------------------------------------------------------------------------------------------
// Tensor-core kernels (fp16/bf16, head_dim % 8 == 0, L <= kMmaMaxSeq), csrc/cuda/mma.cuh.
//
// A whole (batch, head) slice fits in shared memory, so one CTA holds several slices
// (kMmaTargetRows rows in all) with their rows padded to lp = L rounded up to 16 and their columns
// to DP (32, 64 or 128; columns past head_dim and rows past the sample's valid tokens are zeros,
// so a NaN or inf in a padding row is never read). Warp w owns the 16-row block w of the CTA's
// rows: query rows in the forward and the first backward phase, key rows in the second.
//  * forward: S = Q K^T and O = P V on tensor cores, 16 keys at a time with an online softmax
//    (only as far as the block's prefix mask reaches), P rounded to T for the PV product;
//  * backward, one kernel, no atomics: phase 1 (query blocks) recomputes S and dP = dO V^T,
//    forms P and dS = P (dP - delta), accumulates dQ = dS K and stores P and dS (as T) in shared
//    memory; phase 2 (key blocks) reads them transposed with ldmatrix.trans for
//    dV = P^T dO and dK = dS^T Q. delta = rowsum(dO * O) is computed in phase 1 per row.
// Sizes at ResT's shape (B = 4096, H = 12, L = 25 -> lp = 32, Dh = 64, bf16): forward reads q, k, v
// and writes out: 4 x 157 MB + lse 4.9 MB = 634 MB; backward reads q, k, v, out, dout, lse and
// writes dq, dk, dv: 8 x 157 MB + 4.9 MB = 1.26 GB; tensor-core work (padded 16 x 16 blocks) is
// 13 GFLOP forward and 32 GFLOP backward, so both are bound by DRAM: predicted 0.21 ms and 0.42 ms
// at 3.0 TB/s (70% of the 4.3 TB/s copy rate measured on an H200), 0.63 ms forward + backward.

constexpr int kMmaMaxSeq = 128;      // the longest L the slice-per-CTA kernels take
constexpr int kMmaTargetRows = 64;   // rows per CTA: several short slices per CTA
constexpr int kMmaMaxThreads = 256;  // kMmaMaxSeq / 16 warps

// Geometry of a tensor-core launch.
struct MmaProblem : KernelProblem {
  int64_t slices;  // batch * heads
  int lp;          // seq_len rounded up to 16
  int slices_per_cta;
};

// Loads the rows [0, lp) of `count` tensors of each of the CTA's slices into consecutive shared
// tiles (tile (s, c) at (s * count + c) * lp * tile_stride(DP)); rows at or past the slice's n_valid
// (and whole slices past the end) become zeros. Returns after the copies have landed and a
// __syncthreads; n_valid of each slice is left in `n_valid` (shared, slices_per_cta ints).
template <typename T, int DP, int N>
__device__ __forceinline__ void load_slices(const MmaProblem& p, T* tiles, int* n_valid, const T* const (&src)[N]) {
  const int64_t bh0 = static_cast<int64_t>(blockIdx.x) * p.slices_per_cta;
  if (threadIdx.x < p.slices_per_cta) {
    const int64_t bh = bh0 + threadIdx.x;
    n_valid[threadIdx.x] = bh < p.slices ? static_cast<int>(sample_mask(p.mask, bh / p.heads, p.seq_len).n_valid) : 0;
  }
  __syncthreads();
  const int tile = p.lp * mma::tile_stride(DP);
  for (int s = 0; s < p.slices_per_cta; ++s) {
    const int64_t bh = bh0 + s;
    const int nv = n_valid[s];
    const int64_t offset = (bh < p.slices ? bh : 0) * p.seq_len * p.head_dim;
#pragma unroll
    for (int c = 0; c < N; ++c) {
      mma::copy_rows_async(tiles + (s * N + c) * tile, DP, src[c] + offset, p.head_dim, 0, p.lp, threadIdx.x,
                           blockDim.x, [nv](int r) { return r < nv; });
    }
  }
  mma::cp_async_commit();
  mma::cp_async_wait<0>();
  __syncthreads();
}

// Writes accumulator rows r0 + g, r0 + g + 8 (columns < head_dim) of a (L, head_dim) slice times
// `scale`; rows at or past n_valid get exact zeros, rows at or past L are left out. 4-byte stores.
template <typename T, int DP>
__device__ __forceinline__ void store_acc(T* dst, const float (&acc)[DP / 8][4], int r0, int n_valid, int L, int dh,
                                          float scale) {
  const int lane = mma::lane_id();
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = r0 + (lane >> 2) + 8 * h;
    if (row >= L) continue;
    const float f = row < n_valid ? scale : 0.f;
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) {
      const int col = n * 8 + 2 * (lane & 3);
      if (col < dh) {
        const float x = row < n_valid ? acc[n][2 * h] * f : 0.f;
        const float y = row < n_valid ? acc[n][2 * h + 1] * f : 0.f;
        *reinterpret_cast<uint32_t*>(dst + static_cast<int64_t>(row) * dh + col) = mma::Tc<T>::pack(x, y);
      }
    }
  }
}

template <typename T, int DP>
__global__ void __launch_bounds__(kMmaMaxThreads)
    prefix_attention_fwd_mma_kernel(MmaProblem p, const T* __restrict__ q, const T* __restrict__ k,
                                    const T* __restrict__ v, T* __restrict__ out, float* __restrict__ lse) {
  constexpr int SD = mma::tile_stride(DP);
  extern __shared__ uint4 smem_raw[];
  T* tiles = reinterpret_cast<T*>(smem_raw);
  const int tile = p.lp * SD;
  int* n_valid = reinterpret_cast<int*>(tiles + 3 * p.slices_per_cta * tile);
  load_slices<T, DP, 3>(p, tiles, n_valid, {q, k, v});

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize, g = lane >> 2;
  const int blocks = p.lp / 16;
  const int s = warp / blocks, q0 = (warp % blocks) * 16;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) * p.slices_per_cta + s;
  const int L = p.seq_len, dh = p.head_dim, nkc = cdiv(dh, 16);
  if (bh >= p.slices || q0 >= L) return;  // warp-uniform; no block-wide barrier follows
  const SampleMask m = sample_mask(p.mask, bh / p.heads, L);
  T* qs = tiles + 3 * s * tile;
  const T* ks = qs + tile;
  const T* vs = ks + tile;
  const int kend[2] = {static_cast<int>(m.key_end(q0 + g)), static_cast<int>(m.key_end(q0 + g + 8))};
  const int kmax = __reduce_max_sync(mma::kFullMask, static_cast<int>(m.key_end(q0 + (lane & 15))));

  float o[DP / 8][4] = {};
  float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int j0 = 0; j0 < kmax; j0 += 16) {
    float sc[2][4] = {};
    mma::mma_abt<T, DP>(sc, qs, q0, ks, j0, nkc);
    uint32_t pa[4];
    mma::online_softmax<T>(sc, p.scale, j0, [&](int h, int key) { return key < kend[h]; }, mx, l, o, pa);
    mma::mma_ax<T, DP>(o, pa, vs, j0, nkc);
  }

  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] = mma::quad_sum(l[h]);
    const int row = q0 + g + 8 * h;
    const bool ok = kend[h] > 0;
    inv[h] = ok ? 1.f / l[h] : 0.f;
    if ((lane & 3) == 0 && row < L) {
      lse[bh * L + row] = !ok ? 0.f : (mx[h] == INFINITY ? mx[h] : mx[h] + logf(l[h]));
    }
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) {  // padding rows: exact zeros (0 * inf from a value could be NaN)
      o[n][2 * h] = ok ? o[n][2 * h] * inv[h] : 0.f;
      o[n][2 * h + 1] = ok ? o[n][2 * h + 1] * inv[h] : 0.f;
    }
  }
  // Stage the rows in this warp's own query rows (no other warp reads them), then 16-byte stores.
  __syncwarp();
#pragma unroll
  for (int n = 0; n < DP / 8; ++n) mma::store_c(qs, SD, q0, n * 8, o[n], 1.f, 1.f);
  __syncwarp();
  mma::store_rows_warp(out + bh * L * dh, dh, qs + q0 * SD, DP, q0, 16, L);
}

template <typename T, int DP>
__global__ void __launch_bounds__(kMmaMaxThreads)
    prefix_attention_bwd_mma_kernel(MmaProblem p, const T* __restrict__ q, const T* __restrict__ k,
                                    const T* __restrict__ v, const T* __restrict__ out,
                                    const float* __restrict__ lse, const T* __restrict__ dout, T* __restrict__ dq,
                                    T* __restrict__ dk, T* __restrict__ dv) {
  constexpr int SD = mma::tile_stride(DP);
  extern __shared__ uint4 smem_raw[];
  T* tiles = reinterpret_cast<T*>(smem_raw);
  const int tile = p.lp * SD;
  const int SP = mma::tile_stride(p.lp);  // P and dS: (lp queries) x (lp keys)
  const int ptile = p.lp * SP;
  T* probs = tiles + 4 * p.slices_per_cta * tile;  // per slice: P, then dS
  int* n_valid_s = reinterpret_cast<int*>(probs + 2 * p.slices_per_cta * ptile);
  load_slices<T, DP, 4>(p, tiles, n_valid_s, {q, k, v, dout});

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize, g = lane >> 2;
  const int blocks = p.lp / 16;
  const int s = warp / blocks, r0 = (warp % blocks) * 16;  // query block (phase 1), key block (phase 2)
  const int64_t bh = static_cast<int64_t>(blockIdx.x) * p.slices_per_cta + s;
  const int L = p.seq_len, dh = p.head_dim, nkc = cdiv(dh, 16);
  const bool active = bh < p.slices && r0 < L;  // warp-uniform
  const SampleMask m = sample_mask(p.mask, active ? bh / p.heads : 0, L);
  const int nv = static_cast<int>(m.n_valid);
  const int64_t base = active ? bh * L * dh : 0;
  const T* qs = tiles + 4 * s * tile;
  const T* ks = qs + tile;
  const T* vs = ks + tile;
  const T* gs = vs + tile;
  T* ps = probs + 2 * s * ptile;
  T* dss = ps + ptile;

  // Phase 1: query rows [r0, r0 + 16).
  if (active) {
    const int kend[2] = {static_cast<int>(m.key_end(r0 + g)), static_cast<int>(m.key_end(r0 + g + 8))};
    const int kmax = __reduce_max_sync(mma::kFullMask, static_cast<int>(m.key_end(r0 + (lane & 15))));
    float lse_h[2], delta_h[2];
    const int own = r0 + (lane >> 1);  // delta: lanes 2r, 2r + 1 share row r0 + r
    const float delta_own = mma::row_dot_pair(gs + own * SD, out + base + static_cast<int64_t>(own) * dh, dh, own < nv);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      lse_h[h] = kend[h] > 0 ? lse[bh * L + r0 + g + 8 * h] : 0.f;
      delta_h[h] = __shfl_sync(mma::kFullMask, delta_own, 2 * (g + 8 * h));
    }
    float acc[DP / 8][4] = {};
    if (r0 < nv) {  // P and dS of every key block phase 2 reads: [0, nv) rounded up to 16
      for (int j0 = 0; j0 < nv; j0 += 16) {
        float pr[2][4] = {}, ds[2][4] = {};
        if (j0 < kmax) {
          float sc[2][4] = {}, dp[2][4] = {};
          mma::mma_abt<T, DP>(sc, qs, r0, ks, j0, nkc);
          mma::mma_abt<T, DP>(dp, gs, r0, vs, j0, nkc);
#pragma unroll
          for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int h = e >> 1;
              const bool allowed = j0 + nb * 8 + 2 * (lane & 3) + (e & 1) < kend[h];
              pr[nb][e] = allowed ? __expf(scaled(p.scale, sc[nb][e]) - lse_h[h]) : 0.f;
              ds[nb][e] = allowed ? pr[nb][e] * (dp[nb][e] - delta_h[h]) : 0.f;
            }
          }
          uint32_t dsa[4];
          mma::to_a<T>(dsa, ds[0], ds[1]);
          mma::mma_ax<T, DP>(acc, dsa, ks, j0, nkc);
        }
#pragma unroll
        for (int nb = 0; nb < 2; ++nb) {
          mma::store_c(ps, SP, r0, j0 + nb * 8, pr[nb], 1.f, 1.f);
          mma::store_c(dss, SP, r0, j0 + nb * 8, ds[nb], 1.f, 1.f);
        }
      }
    }
    store_acc<T, DP>(dq + base, acc, r0, nv, L, dh, p.scale);
  }
  __syncthreads();  // P and dS of every query block are in shared memory

  // Phase 2: key rows [r0, r0 + 16). Queries attending them: all valid ones, or for word keys of
  // the rest mask only the words from r0 on (r0 is a multiple of 16: whole blocks).
  if (active) {
    float acc_k[DP / 8][4] = {}, acc_v[DP / 8][4] = {};
    if (r0 < nv) {
      const int i_begin = (m.full || r0 < m.n_fixed) ? 0 : r0;
      for (int i0 = i_begin; i0 < nv; i0 += 16) {
        uint32_t pa[4], dsa[4];
        mma::load_a_trans(pa, ps, SP, r0, i0);
        mma::load_a_trans(dsa, dss, SP, r0, i0);
        mma::mma_ax<T, DP>(acc_v, pa, gs, i0, nkc);
        mma::mma_ax<T, DP>(acc_k, dsa, qs, i0, nkc);
      }
    }
    store_acc<T, DP>(dk + base, acc_k, r0, nv, L, dh, p.scale);
    store_acc<T, DP>(dv + base, acc_v, r0, nv, L, dh, 1.f);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

struct Launch {
  Problem problem;
  LaunchConfig config;
};

// Shared row stride: head_dim rounded up to float4, then to an odd number of float4.
int64_t row_stride(int64_t head_dim) {
  const int64_t n4 = cdiv(head_dim, 4);
  return 4 * (n4 % 2 == 1 ? n4 : n4 + 1);
}

// Shared floats of a kernel: two kTile-row tiles, then per warp `row_sets` sets of its R rows and
// `scratch` floats.
struct SmemLayout {
  int row_sets;
  int64_t scratch;
  int64_t floats(int64_t stride, int64_t warps, int64_t rows_per_warp) const {
    return 2 * kTile * stride + warps * (row_sets * rows_per_warp * stride + scratch);
  }
};

// Warps per block: as many as shared memory allows (up to kMaxBlockRows rows), then balanced over
// the blocks of a (batch, head), so a short sequence runs in one block and tiles are read few times.
Launch plan(const AttentionProblem& s, int rows_per_warp, const SmemLayout& layout) {
  const int64_t stride = row_stride(s.head_dim);
  int64_t max_warps = kMaxBlockRows / rows_per_warp;
  while (max_warps > 1 &&
         layout.floats(stride, max_warps, rows_per_warp) * sizeof(float) > kSmemLimit) {
    --max_warps;
  }
  const int64_t row_blocks = cdiv(s.seq_len, max_warps * rows_per_warp);
  const int64_t warps = cdiv(cdiv(s.seq_len, row_blocks), rows_per_warp);
  const int64_t blocks = s.batch * s.heads * row_blocks;
  if (blocks > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("attention (cuda): batch * heads * seq_len is too large for "
                                "one launch");
  }
  Launch launch;
  static_cast<KernelProblem&>(launch.problem) = kernel_problem(s, stride);
  launch.problem.row_blocks = static_cast<int>(row_blocks);
  launch.problem.vec = false;
  launch.config.grid = dim3(static_cast<unsigned>(blocks));
  launch.config.block = dim3(static_cast<unsigned>(warps) * kWarpSize);
  launch.config.smem = static_cast<size_t>(layout.floats(stride, warps, rows_per_warp)) * sizeof(float);
  return launch;
}

// Whether rows of `p` can be read 4 elements at a time.
template <typename T>
bool vec_ok(const AttentionProblem& s, const void* p) {
  return s.head_dim % 4 == 0 && reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0;
}

// Validates the arguments; false when there is nothing to compute.
bool check_args(const AttentionProblem& s) {
  if (s.dtype != ScalarType::Float32 && s.dtype != ScalarType::Float16 &&
      s.dtype != ScalarType::BFloat16) {
    throw std::invalid_argument(
        "attention (cuda): unsupported dtype, expected float32, float16 or bfloat16");
  }
  if (s.head_dim < 1 || s.head_dim > kMaxHeadDim) {
    throw std::invalid_argument("attention (cuda): head_dim must be in [1, 128], got " +
                                std::to_string(s.head_dim));
  }
  if (s.batch <= 0 || s.heads <= 0 || s.seq_len <= 0) return false;
  if (s.seq_len > std::numeric_limits<int32_t>::max() / kMaxHeadDim) {
    throw std::invalid_argument("attention (cuda): seq_len too large, got " +
                                std::to_string(s.seq_len));
  }
  if (!mask_kind_implemented(s.mask.kind)) {
    throw std::invalid_argument("attention (cuda): mask kind " +
                                std::to_string(static_cast<int>(s.mask.kind)) + " is not implemented");
  }
  // The kernels index keys below key_end <= n_fixed + clamped length <= seq_len only if this holds.
  if (s.mask.n_fixed < 0 || s.mask.n_fixed > s.seq_len) {
    throw std::invalid_argument("attention (cuda): mask.n_fixed must be in [0, seq_len], got " +
                                std::to_string(s.mask.n_fixed));
  }
  if (s.mask.lengths == nullptr) throw std::invalid_argument("attention (cuda): mask.lengths is null");
  return true;
}

template <typename T, int NC>
struct Fwd {
  static void run(const AttentionForward& a, cudaStream_t stream) {
    constexpr int R = kGroups * quads_per_warp(NC);
    const AttentionProblem& s = a.problem;
    Launch l = plan(s, R, {1, (kTile + 1) * R});
    l.problem.vec = vec_ok<T>(s, a.q) && vec_ok<T>(s, a.k) && vec_ok<T>(s, a.v);
    launch("prefix_attention_fwd_kernel", prefix_attention_fwd_kernel<T, NC>, l.config, stream, l.problem,
           static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
           static_cast<T*>(a.out), static_cast<float*>(a.lse));
  }
};

template <typename T, int NC>
struct Bwd {
  static void run(const AttentionBackward& a, cudaStream_t stream) {
    constexpr int R = kGroups * quads_per_warp(NC);
    const AttentionProblem& s = a.problem;
    const auto q = static_cast<const T*>(a.q);
    const auto k = static_cast<const T*>(a.k);
    const auto v = static_cast<const T*>(a.v);
    const auto dout = static_cast<const T*>(a.dout);
    const auto lse = static_cast<const float*>(a.lse);  // float for every dtype served here
    const bool vec = vec_ok<T>(s, q) && vec_ok<T>(s, k) && vec_ok<T>(s, v) && vec_ok<T>(s, dout);

    Launch l = plan(s, R, {2, kTile * R});
    l.problem.vec = vec;
    launch("prefix_attention_bwd_dq_kernel", prefix_attention_bwd_dq_kernel<T, NC>, l.config, stream, l.problem, q,
           k, v, static_cast<const T*>(a.out), lse, dout, static_cast<T*>(a.dq), a.workspace);

    // Same stream: runs after the dq kernel has written delta.
    l = plan(s, R, {2, 2 * kTile * R});
    l.problem.vec = vec;
    launch("prefix_attention_bwd_dkv_kernel", prefix_attention_bwd_dkv_kernel<T, NC>, l.config, stream, l.problem, q,
           k, v, lse, a.workspace, dout, static_cast<T*>(a.dk), static_cast<T*>(a.dv));
  }
};

// Runs Fn<T, NC>, NC = the column slices per lane that head_dim needs.
template <typename T, template <typename, int> class Fn, typename Args>
void dispatch_head_dim(const Args& a, cudaStream_t stream) {
  switch (cdiv(a.problem.head_dim, kWarpSize)) {
    case 1: return Fn<T, 1>::run(a, stream);
    case 2: return Fn<T, 2>::run(a, stream);
    case 3: return Fn<T, 3>::run(a, stream);
    default: return Fn<T, 4>::run(a, stream);  // head_dim <= 128, checked
  }
}

// The tensor-core launch of an (L, head_dim) problem: slices_per_cta slices of lp rows per CTA, one
// warp per 16 rows; shared memory for `tiles` (lp, DP) tiles per slice, plus P and dS (lp x lp)
// with `probs`, plus one int per slice.
template <int DP>
struct MmaLaunch {
  MmaProblem problem;
  LaunchConfig config;
  MmaLaunch(const AttentionProblem& s, int tiles, bool probs) {
    static_cast<KernelProblem&>(problem) = kernel_problem(s, mma::tile_stride(DP));
    const int lp = static_cast<int>(cdiv(s.seq_len, 16) * 16);
    const int spc = std::max(1, kMmaTargetRows / lp);
    problem.slices = s.batch * s.heads;
    problem.lp = lp;
    problem.slices_per_cta = spc;
    const int64_t ctas = cdiv(problem.slices, spc);
    if (ctas > std::numeric_limits<int32_t>::max()) {
      throw std::invalid_argument("attention (cuda): batch * heads is too large for one launch");
    }
    const size_t per_slice = sizeof(uint16_t) * (static_cast<size_t>(tiles) * lp * mma::tile_stride(DP) +
                                                 (probs ? 2 * static_cast<size_t>(lp) * mma::tile_stride(lp) : 0));
    config.grid = dim3(static_cast<unsigned>(ctas));
    config.block = dim3(static_cast<unsigned>(spc * lp / 16 * kWarpSize));
    config.smem = spc * per_slice + spc * sizeof(int);
  }
};

// The tensor-core kernels serve fp16/bf16 calls with L <= kMmaMaxSeq (whole slices in shared memory).
template <typename... Ptrs>
bool use_mma(const AttentionProblem& s, const Ptrs*... ptrs) {
  return s.seq_len <= kMmaMaxSeq && mma_eligible(s, ptrs...);
}

void forward_mma(const AttentionForward& a, cudaStream_t stream) {
  dispatch_mma(a.problem.dtype, a.problem.head_dim, [&](auto type, auto dp) {
    using T = typename decltype(type)::type;
    constexpr int DP = decltype(dp)::value;
    const MmaLaunch<DP> l(a.problem, 3, false);
    launch("prefix_attention_fwd_mma_kernel", prefix_attention_fwd_mma_kernel<T, DP>, l.config, stream, l.problem,
           static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
           static_cast<T*>(a.out), static_cast<float*>(a.lse));
  });
}

void backward_mma(const AttentionBackward& a, cudaStream_t stream) {
  dispatch_mma(a.problem.dtype, a.problem.head_dim, [&](auto type, auto dp) {
    using T = typename decltype(type)::type;
    constexpr int DP = decltype(dp)::value;
    const MmaLaunch<DP> l(a.problem, 4, true);
    launch("prefix_attention_bwd_mma_kernel", prefix_attention_bwd_mma_kernel<T, DP>, l.config, stream, l.problem,
           static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
           static_cast<const T*>(a.out), static_cast<const float*>(a.lse), static_cast<const T*>(a.dout),
           static_cast<T*>(a.dq), static_cast<T*>(a.dk), static_cast<T*>(a.dv));
  });
}

}  // namespace

void attention_forward_cuda(const AttentionForward& args) {
  if (!check_args(args.problem)) return;
  if (args.problem.mask.kind == MaskKind::Bottleneck) return tiled_attention_fwd_cuda(args);
  if (use_mma(args.problem, args.q, args.k, args.v, args.out)) {
    return forward_mma(args, static_cast<cudaStream_t>(args.exec.stream));
  }
  dispatch_dtype(args.problem.dtype, [&](auto type) {
    dispatch_head_dim<typename decltype(type)::type, Fwd>(args, static_cast<cudaStream_t>(args.exec.stream));
  });
}

void attention_backward_cuda(const AttentionBackward& args) {
  if (!check_args(args.problem)) return;
  if (args.problem.mask.kind == MaskKind::Bottleneck) return tiled_attention_bwd_cuda(args);
  if (use_mma(args.problem, args.q, args.k, args.v, args.out, args.dout, args.dq, args.dk, args.dv)) {
    return backward_mma(args, static_cast<cudaStream_t>(args.exec.stream));
  }
  dispatch_dtype(args.problem.dtype, [&](auto type) {
    dispatch_head_dim<typename decltype(type)::type, Bwd>(args, static_cast<cudaStream_t>(args.exec.stream));
  });
}

}  // namespace zsar
