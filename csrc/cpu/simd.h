// SIMD helpers shared by the CPU attention kernels (prefix_attention.cpp, tiled_attention.cpp):
// portable 32-byte vectors, a vectorised exp, a small register-tiled gemm, dot and transpose.
// Included inside each kernel file's per-ISA namespace (every helper is inline or a template).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace zsar {
namespace cpu {
namespace ZSAR_CPU_ISA {

// Portable SIMD through GCC/Clang vector extensions: one Vec is 32 bytes (an AVX2 register in the
// avx2 build; the baseline build splits it into two SSE2 registers). The gemm below also takes
// BYTES = 64 (one AVX-512 register in a build that has them; tiled_attention.cpp's avx512 variant).
template <typename T, int BYTES = 32>
struct VecOf {
  typedef T type __attribute__((vector_size(BYTES)));
};
template <typename T, int BYTES = 32>
using Vec = typename VecOf<T, BYTES>::type;
template <typename T, int BYTES = 32>
constexpr int64_t kWidth = BYTES / sizeof(T);
constexpr int64_t kPad = 8;  // key dimensions are padded to a multiple of 8 (>= one Vec of either type)

// The same vector at element alignment, through which unaligned loads and stores are direct
// register moves (a memcpy made GCC bounce register tiles through the stack).
template <typename T, int BYTES = 32>
struct UnalignedVecOf {
  typedef T type __attribute__((vector_size(BYTES), aligned(alignof(T)), may_alias));
};

template <int BYTES = 32, typename T>
inline Vec<T, BYTES> loadu(const T* p) {
  return *reinterpret_cast<const typename UnalignedVecOf<T, BYTES>::type*>(p);
}

template <int BYTES = 32, typename T>
inline void storeu(T* p, const Vec<T, BYTES>& v) {
  *reinterpret_cast<typename UnalignedVecOf<T, BYTES>::type*>(p) = v;
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// e^x for a whole array, written so the compiler vectorises it: exp(x) = 2^k * e^r with
// k = round(x / ln 2), |r| <= ln2 / 2, e^r by the Cephes expf polynomial (~1.5 ulp). 2^k is built
// as integer bits and reinterpreted in bulk (a per-element bit cast would block vectorisation).
// Like std::exp: NaN stays NaN, x < -87 (and -inf) gives 0, x >= ~88.4 (and +inf) gives +inf (the
// clamp at 89 makes 2^k = 2^128, which is +inf).
inline void exp_inplace(float* __restrict x, int64_t n) {
  constexpr int64_t kChunk = 64;
  alignas(32) float poly[kChunk], two_k[kChunk];
  alignas(32) int32_t bits[kChunk];
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t m = std::min(kChunk, n - c);
    float* __restrict xc = x + c;
#pragma omp simd
    for (int64_t j = 0; j < m; ++j) {
      const float xj = xc[j];
      const float hi = xj > 89.0f ? 89.0f : xj;
      const float v = hi < -87.0f ? -87.0f : hi;
      const float k = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
      const float r = (v - k * 0.693359375f) + k * 2.12194440e-4f;  // ln2 split in hi + lo parts
      float p = 1.9875691500e-4f;
      p = p * r + 1.3981999507e-3f;
      p = p * r + 8.3334519073e-3f;
      p = p * r + 4.1665795894e-2f;
      p = p * r + 1.6666665459e-1f;
      p = p * r + 5.0000001201e-1f;
      poly[j] = xj < -87.0f ? 0.0f : p * r * r + r + 1.0f;  // underflow (and -inf) to exactly 0
      bits[j] = (static_cast<int32_t>(v == v ? k : 0.0f) + 127) << 23;  // NaN: 2^0 (no undefined cast)
    }
    std::memcpy(two_k, bits, sizeof(float) * static_cast<size_t>(m));
#pragma omp simd
    for (int64_t j = 0; j < m; ++j) xc[j] = poly[j] * two_k[j];
  }
}

inline void exp_inplace(double* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = std::exp(x[j]);
}

// C[0:MR, 0:NV*W) = A[0:MR, 0:k) . B[0:k, 0:NV*W): a register tile. MR*NV independent FMA chains
// (8 for 4x2) hide the FMA latency; accumulators stay in registers for the whole k loop.
// With ACC, C is accumulated into (C += A . B) instead of overwritten; with TA, A is read
// transposed (A(r, p) = A[p * lda + r]), so P^T-style products need no transpose.
template <int MR, int NV, bool ACC, bool TA, int BYTES = 32, typename T>
inline void gemm_tile(int64_t k, const T* __restrict A, int64_t lda, const T* __restrict B, int64_t ldb,
                      T* __restrict C, int64_t ldc) {
  constexpr int64_t W = kWidth<T, BYTES>;
  Vec<T, BYTES> acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = ACC ? loadu<BYTES>(C + r * ldc + v * W) : Vec<T, BYTES>{};
  for (int64_t p = 0; p < k; ++p) {
    Vec<T, BYTES> b[NV];
    for (int v = 0; v < NV; ++v) b[v] = loadu<BYTES>(B + p * ldb + v * W);
    for (int r = 0; r < MR; ++r) {
      const T a = TA ? A[p * lda + r] : A[r * lda + p];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) storeu<BYTES>(C + r * ldc + v * W, acc[r][v]);
}

template <int MR, bool ACC, bool TA, int BYTES = 32, typename T>
inline void gemm_rows(int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                      int64_t ldc) {
  constexpr int64_t W = kWidth<T, BYTES>;
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) gemm_tile<MR, 2, ACC, TA, BYTES>(k, A, lda, B + j, ldb, C + j, ldc);
  if (j + W <= n) {
    gemm_tile<MR, 1, ACC, TA, BYTES>(k, A, lda, B + j, ldb, C + j, ldc);
    j += W;
  }
  if constexpr (BYTES > 32) {  // a half-width vector: e.g. head dim 40 with 16-float vectors
    if (j + W / 2 <= n) {
      gemm_tile<MR, 1, ACC, TA, BYTES / 2>(k, A, lda, B + j, ldb, C + j, ldc);
      j += W / 2;
    }
  }
  for (; j < n; ++j) {  // a head dim that is not a multiple of the vector width
    for (int r = 0; r < MR; ++r) {
      T acc = ACC ? C[r * ldc + j] : T(0);
      for (int64_t p = 0; p < k; ++p) acc += (TA ? A[p * lda + r] : A[r * lda + p]) * B[p * ldb + j];
      C[r * ldc + j] = acc;
    }
  }
}

// The last m < R rows of a gemm, as one register tile of exactly m rows.
template <int R, bool ACC, bool TA, int BYTES, typename T>
inline void gemm_last_rows(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                           int64_t ldc) {
  if constexpr (R > 1) {
    if (m == R - 1) return gemm_rows<R - 1, ACC, TA, BYTES>(n, k, A, lda, B, ldb, C, ldc);
    gemm_last_rows<R - 1, ACC, TA, BYTES>(m, n, k, A, lda, B, ldb, C, ldc);
  }
}

// C[0:m, 0:n) = A[0:m, 0:k) . B[0:k, 0:n), all row-major with the given row strides: the one
// small-matrix primitive of these kernels. k may be 0 (C is zeroed). With ACC: C += A . B; with
// TA: A is stored transposed, (k, m) with row stride lda. MR: rows per register tile (4 or 6 with
// 16 vector registers: 6 x 2 vectors keeps 12 FMA chains in flight, which long inner products need
// to approach peak; up to 12 with AVX-512's 32). BYTES: the vector width (32, or 64 with AVX-512).
template <bool ACC = false, bool TA = false, int MR = 4, int BYTES = 32, typename T>
inline void gemm(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                 int64_t ldc) {
  static_assert(MR >= 4 && MR <= 12, "register tile rows");
  const auto rows_of_a = [&](int64_t i) { return TA ? A + i : A + i * lda; };
  int64_t i = 0;
  for (; i + MR <= m; i += MR) gemm_rows<MR, ACC, TA, BYTES>(n, k, rows_of_a(i), lda, B, ldb, C + i * ldc, ldc);
  if (i < m) gemm_last_rows<MR, ACC, TA, BYTES>(m - i, n, k, rows_of_a(i), lda, B, ldb, C + i * ldc, ldc);
}

// Largest of x[0:n) (-inf for n = 0), ignoring NaN (a NaN score still reaches the output through
// exp and the row sum). Vector lanes with a compare-select: `#pragma omp simd reduction(max)` over
// std::max is left scalar by GCC (its NaN and signed-zero rules), a 4-cycle dependency per element.
template <typename T>
inline T max_of(const T* x, int64_t n) {
  constexpr int64_t W = kWidth<T>;
  const T lowest = -std::numeric_limits<T>::infinity();
  Vec<T> m0 = Vec<T>{} + lowest, m1 = m0;
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    const Vec<T> a = loadu(x + j), b = loadu(x + j + W);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  m0 = m1 > m0 ? m1 : m0;
  T m = lowest;
  for (int64_t l = 0; l < W; ++l) m = m0[l] > m ? m0[l] : m;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < n; ++d) acc += a[d] * b[d];
  return acc;
}

// The shuffle of two vectors by constant lane indices (0..n-1: a's lanes, n..2n-1: b's), which
// the compiler turns into the unpack / shuffle / lane-permute instructions of the target.
#if defined(__clang__)
#define ZSAR_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define ZSAR_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, VecOf<int32_t>::type{__VA_ARGS__})
#endif

// The 8 x 8 transpose of eight float vectors in registers (r[i] holds row i; afterwards r[c] holds
// column c): unpack pairs of rows, interleave pairs of pairs, swap the 128-bit halves.
inline void transpose8x8(Vec<float> (&r)[8]) {
  Vec<float> t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = ZSAR_SHUFFLE(r[2 * i], r[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * i + 1] = ZSAR_SHUFFLE(r[2 * i], r[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int h = 0; h < 2; ++h)  // rows 0-3, then rows 4-7: u[4h + c] holds columns c and c + 4
    for (int i = 0; i < 2; ++i) {
      u[4 * h + 2 * i] = ZSAR_SHUFFLE(t[4 * h + i], t[4 * h + i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[4 * h + 2 * i + 1] = ZSAR_SHUFFLE(t[4 * h + i], t[4 * h + i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int c = 0; c < 4; ++c) {
    r[c] = ZSAR_SHUFFLE(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[c + 4] = ZSAR_SHUFFLE(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}
#undef ZSAR_SHUFFLE

// dst[c * ldd + r] = row(r)[c] for r < rows, c < cols: the transpose of `rows` rows of length
// `cols`, row r at the pointer row(r) (rows need not be evenly spaced: a slice's valid tokens are
// a prefix and a suffix). float: 8 x 8 blocks go through registers, eight vector loads and stores
// for what took 64 strided scalar stores (the packing that held ~15% of an L=64 backward's kernel
// time; bench/RESULTS.md, session 12); the edges and double go element by element.
template <typename T, typename RowPtr>
inline void transpose_rows(int64_t rows, int64_t cols, RowPtr&& row, T* __restrict dst, int64_t ldd) {
  int64_t r0 = 0, c_vec = 0;
  if constexpr (std::is_same_v<T, float>) {
    c_vec = cols / 8 * 8;
    for (; r0 + 8 <= rows; r0 += 8) {
      const float* in[8];
      for (int i = 0; i < 8; ++i) in[i] = row(r0 + i);
      for (int64_t c = 0; c < c_vec; c += 8) {
        Vec<float> v[8];
        for (int i = 0; i < 8; ++i) v[i] = loadu(in[i] + c);
        transpose8x8(v);
        for (int i = 0; i < 8; ++i) storeu(dst + (c + i) * ldd + r0, v[i]);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {  // the columns past the blocks of the first rows, then the last rows
    const T* __restrict in = row(r);
    for (int64_t c = r < r0 ? c_vec : 0; c < cols; ++c) dst[c * ldd + r] = in[c];
  }
}

// dst[0:cols, 0:rows) = src[0:rows, 0:cols) transposed; dst columns rows..round_up(rows, kPad) are
// zeroed so that padded vector lanes read finite values.
template <typename T>
inline void transpose(const T* __restrict src, int64_t rows, int64_t cols, int64_t lds,
                      T* __restrict dst, int64_t ldd) {
  const int64_t padded = round_up(rows, kPad);
  transpose_rows(rows, cols, [&](int64_t r) { return src + r * lds; }, dst, ldd);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = rows; r < padded; ++r) dst[c * ldd + r] = T(0);
}

}  // namespace ZSAR_CPU_ISA
}  // namespace cpu
}  // namespace zsar
