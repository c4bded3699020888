// Warp-level tensor-core building blocks shared by the fp16/bf16 attention kernels
// (prefix_attention.cu for the Rest/Full masks, tiled_attention.cu for Bottleneck): mma.sync
// m16n8k16 with float accumulators, ldmatrix fragment loads from shared memory, cp.async copies
// from global memory, and the quad reductions of the accumulator layout.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane / 4 (groupID) and t = lane % 4 (threadID_in_group):
//   A (16 x 16, row major), 4 registers of 2 elements: a0 = (g, 2t..2t+1), a1 = (g+8, 2t..),
//     a2 = (g, 2t+8..), a3 = (g+8, 2t+8..).
//   B (16 x 8, "col": element (k, n) of column n), 2 registers: b0 = (k = 2t..2t+1, n = g),
//     b1 = (k = 2t+8.., n = g).
//   C/D (16 x 8 floats): c0, c1 = (g, 2t), (g, 2t+1); c2, c3 = (g+8, 2t), (g+8, 2t+1).
// The lower-indexed element of a pair sits in the low 16 bits of its register.
//
// ldmatrix .x4 loads four 8 x 8 b16 matrices: lanes 8m..8m+7 give the row addresses of matrix m,
// and register m of lane l receives row l / 4, columns 2 (l % 4) .. +1 of matrix m (with .trans:
// rows 2 (l % 4) .. +1 of column l / 4, i.e. of the transposed matrix). The four loaders below pick
// the row addresses so that the registers come out as the A or B fragments above:
//   load_a        A = X[m][k] stored row major (X = Q, dO, K, V as the row operand)
//   load_a_trans  A = X^T, X[k][m] stored row major (P^T, dS^T from P[query][key], dS[query][key])
//   load_b_nt     B[k][n] = X[n][k] (X = K in Q K^T, V in dO V^T, Q in K Q^T, dO in V dO^T)
//   load_b_trans  B[k][n] = X[k][n] (X = V in P V, K in dS K, dO in P^T dO, Q in dS^T Q)
// b_nt and b_trans fill two 8-column n-blocks at once: registers {0, 1} and {2, 3}.
//
// Shared tiles are b16 rows with a stride of (16 m + 8) elements (2 (16 m + 8) bytes = 32 m + 16):
// the 8 row addresses of one ldmatrix matrix then fall in 8 distinct 16-byte bank groups, and the
// 4-byte stores of an accumulator fragment (8 rows x 4 lanes) in 32 distinct banks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "convert.cuh"

namespace zsar {
namespace mma {

constexpr unsigned kFullMask = 0xffffffffu;

// Element traits: the mma instruction and the float pair -> register packing of each 16-bit type.
template <typename T>
struct Tc;

template <>
struct Tc<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <>
struct Tc<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }

// Address pattern 1: matrix m = lane / 8 at rows r0 + 8 (m & 1), columns c0 + 8 (m >> 1).
template <typename T>
__device__ __forceinline__ const T* rows_then_cols(const T* base, int stride, int r0, int c0) {
  const int l = lane_id();
  return base + (r0 + (l & 15)) * stride + c0 + ((l >> 4) << 3);
}
// Address pattern 2: matrix m = lane / 8 at rows r0 + 8 (m >> 1), columns c0 + 8 (m & 1).
template <typename T>
__device__ __forceinline__ const T* cols_then_rows(const T* base, int stride, int r0, int c0) {
  const int l = lane_id();
  return base + (r0 + ((l >> 4) << 3) + (l & 7)) * stride + c0 + (((l >> 3) & 1) << 3);
}

// A fragment of rows [m0, m0 + 16), columns [k0, k0 + 16) of X stored row major.
template <typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* x, int stride, int m0, int k0) {
  ldmatrix_x4(a, rows_then_cols(x, stride, m0, k0));
}
// A fragment of X^T rows [m0, m0 + 16), columns [k0, k0 + 16), with X[k][m] stored row major.
template <typename T>
__device__ __forceinline__ void load_a_trans(uint32_t (&a)[4], const T* x, int stride, int m0, int k0) {
  ldmatrix_x4_trans(a, cols_then_rows(x, stride, k0, m0));
}
// B fragments of two n-blocks [n0, n0 + 8), [n0 + 8, n0 + 16) and k in [k0, k0 + 16), with
// B[k][n] = X[n][k] (X stored row major): b = {block 0: b[0], b[1]; block 1: b[2], b[3]}.
template <typename T>
__device__ __forceinline__ void load_b_nt(uint32_t (&b)[4], const T* x, int stride, int n0, int k0) {
  ldmatrix_x4(b, cols_then_rows(x, stride, n0, k0));
}
// As load_b_nt with B[k][n] = X[k][n] (X stored row major).
template <typename T>
__device__ __forceinline__ void load_b_trans(uint32_t (&b)[4], const T* x, int stride, int k0, int n0) {
  ldmatrix_x4_trans(b, rows_then_cols(x, stride, k0, n0));
}

// The A fragment of a 16 x 16 block whose two 8-column halves are the accumulators c0 (columns
// 0..7) and c1 (columns 8..15): the C layout of two n-blocks is the A layout of one k-block.
template <typename T>
__device__ __forceinline__ void to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = Tc<T>::pack(c0[0], c0[1]);
  a[1] = Tc<T>::pack(c0[2], c0[3]);
  a[2] = Tc<T>::pack(c1[0], c1[1]);
  a[3] = Tc<T>::pack(c1[2], c1[3]);
}

// Writes accumulator rows (g, g + 8), columns (2t, 2t + 1) of an n-block at column n0, scaled by
// f[0] / f[1] per row, as T pairs into a row-major shared tile whose block starts at row m0.
template <typename T>
__device__ __forceinline__ void store_c(T* x, int stride, int m0, int n0, const float (&c)[4], float f0, float f1) {
  const int l = lane_id();
  const int r = m0 + (l >> 2), col = n0 + 2 * (l & 3);
  *reinterpret_cast<uint32_t*>(x + r * stride + col) = Tc<T>::pack(c[0] * f0, c[1] * f0);
  *reinterpret_cast<uint32_t*>(x + (r + 8) * stride + col) = Tc<T>::pack(c[2] * f1, c[3] * f1);
}

// Reductions over the 4 lanes of a quad (the lanes holding one accumulator row).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFullMask, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFullMask, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(kFullMask, x, 1);
  return x + __shfl_xor_sync(kFullMask, x, 2);
}

// 16-byte asynchronous copy global -> shared; `valid` false writes 16 zero bytes instead (the
// source is not read: src-size 0).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
// 4-byte asynchronous copy (zero-filled when not `valid`).
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Shared row stride (elements) of a tile of `cols` 16-bit columns (cols a multiple of 16).
__host__ __device__ constexpr int tile_stride(int cols) { return cols + 8; }

// Copies rows [r0, r0 + rows) of a (L, dh) 16-bit slice into a shared tile of `rows` x dp (stride
// tile_stride(dp)) with 16-byte cp.async, by `nthreads` threads starting at thread `tid`: rows
// that are not `valid(pos)` and columns [dh, dp) become zeros. dh % 8 == 0, src 16-byte aligned.
template <typename T, typename Valid>
__device__ __forceinline__ void copy_rows_async(T* dst, int dp, const T* src, int dh, int r0, int rows, int tid,
                                                int nthreads, Valid valid) {
  const int chunks = dp / 8;  // 16-byte chunks per shared row
  for (int e = tid; e < rows * chunks; e += nthreads) {
    const int r = e / chunks, c = e - r * chunks;
    const bool ok = c * 8 < dh && valid(r0 + r);
    // A zero-filled chunk still needs a valid-looking address; the slice's first row is one.
    const T* from = ok ? src + static_cast<int64_t>(r0 + r) * dh + c * 8 : src;
    cp_async16(dst + r * tile_stride(dp) + c * 8, from, ok);
  }
}

// Copies shared rows [0, rows) (columns [0, dh)) of a tile to rows [r0, r0 + rows) of a (L, dh)
// slice with 16-byte stores, rows at or past `row_end` left out, by the lanes of one warp.
template <typename T>
__device__ __forceinline__ void store_rows_warp(T* dst, int dh, const T* tile, int dp, int r0, int rows, int row_end) {
  const int chunks = dh / 8;
  for (int e = lane_id(); e < rows * chunks; e += 32) {
    const int r = e / chunks, c = e - r * chunks;
    if (r0 + r < row_end) {
      *reinterpret_cast<uint4*>(dst + static_cast<int64_t>(r0 + r) * dh + c * 8) =
          *reinterpret_cast<const uint4*>(tile + r * tile_stride(dp) + c * 8);
    }
  }
}

// dot(dout_row, out_row) in float over dh (a multiple of 8) elements, the row of `dout` in a shared
// tile and the row of `out` in global memory, split over the two lanes l and l ^ 1 (both get the sum).
template <typename T>
__device__ __forceinline__ float row_dot_pair(const T* dout_tile_row, const T* out_row, int dh, bool valid) {
  float part = 0.f;
  if (valid) {
    for (int c = (lane_id() & 1) * 8; c < dh; c += 16) {
      const uint4 a = *reinterpret_cast<const uint4*>(dout_tile_row + c);
      const uint4 b = *reinterpret_cast<const uint4*>(out_row + c);
      const T* x = reinterpret_cast<const T*>(&a);
      const T* y = reinterpret_cast<const T*>(&b);
#pragma unroll
      for (int i = 0; i < 8; ++i) part = fmaf(to_float(x[i]), to_float(y[i]), part);
    }
  }
  return part + __shfl_xor_sync(kFullMask, part, 1);
}

// The online softmax of one 16-key block of scores s (n-blocks 0, 1; rows g and g + 8 as h = 0, 1):
// entries with allowed(h, key) false are dropped, the rest scaled; updates the running maximum mx
// and per-lane partial sums l, rescales the output accumulators o, and returns P as an A fragment.
template <typename T, int NO, typename Allowed>
__device__ __forceinline__ void online_softmax(float (&s)[2][4], float scale, int j0, Allowed allowed, float (&mx)[2],
                                               float (&l)[2], float (&o)[NO][4], uint32_t (&pa)[4]) {
  const int t = lane_id() & 3;
  float block_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int h = e >> 1;
      s[nb][e] = allowed(h, j0 + nb * 8 + 2 * t + (e & 1)) ? scaled(scale, s[nb][e]) : -INFINITY;
      block_max[h] = fmaxf(block_max[h], s[nb][e]);
    }
  }
  float shift[2], alpha[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float m_new = fmaxf(mx[h], quad_max(block_max[h]));
    shift[h] = m_new == -INFINITY ? 0.f : m_new;  // no -inf - -inf
    alpha[h] = __expf(mx[h] - shift[h]);
    mx[h] = m_new;
    l[h] *= alpha[h];
  }
#pragma unroll
  for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[nb][e] = __expf(s[nb][e] - shift[e >> 1]);  // dropped entries: exp(-inf) = 0
      l[e >> 1] += s[nb][e];
    }
  }
#pragma unroll
  for (int n = 0; n < NO; ++n) {
    o[n][0] *= alpha[0];
    o[n][1] *= alpha[0];
    o[n][2] *= alpha[1];
    o[n][3] *= alpha[1];
  }
  to_a<T>(pa, s[0], s[1]);
}

// s[nb] += A B^T over the first nkc 16-column chunks, A rows [a0, a0 + 16) of `a`, B^T rows
// [b0, b0 + 16) of `b` (both row-major shared tiles of stride SD).
template <typename T, int DP>
__device__ __forceinline__ void mma_abt(float (&s)[2][4], const T* a, int a0, const T* b, int b0, int nkc) {
  constexpr int SD = tile_stride(DP);
#pragma unroll
  for (int kc = 0; kc < DP / 16; ++kc) {
    if (kc < nkc) {
      uint32_t fa[4], fb[4];
      load_a(fa, a, SD, a0, kc * 16);
      load_b_nt(fb, b, SD, b0, kc * 16);
      Tc<T>::mma(s[0], fa, fb[0], fb[1]);
      Tc<T>::mma(s[1], fa, fb[2], fb[3]);
    }
  }
}

// acc += A X over the first nkc 16-column chunks of X, A a 16 x 16 fragment and X rows
// [x0, x0 + 16) of a row-major shared tile.
template <typename T, int DP>
__device__ __forceinline__ void mma_ax(float (&acc)[DP / 8][4], const uint32_t (&a)[4], const T* x, int x0, int nkc) {
  constexpr int SD = tile_stride(DP);
#pragma unroll
  for (int dc = 0; dc < DP / 16; ++dc) {
    if (dc < nkc) {
      uint32_t fb[4];
      load_b_trans(fb, x, SD, x0, dc * 16);
      Tc<T>::mma(acc[2 * dc], a, fb[0], fb[1]);
      Tc<T>::mma(acc[2 * dc + 1], a, fb[2], fb[3]);
    }
  }
}

}  // namespace mma
}  // namespace zsar
