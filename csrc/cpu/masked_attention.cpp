// CPU kernels of the fused masked cross-modal attention (DESIGN.md §2.1).
//
// Compiled once per instruction set (see CMakeLists.txt: ZSAR_CPU_ISA = avx2 / baseline); the
// entry points in dispatch.cpp pick the best one the running CPU supports.
//
// One OpenMP task per (batch, head). ResT sequences are short (L ~ 25): a (b, h) slice fits in L1,
// and every product (Q K^T, P V, dO V^T, dS K, P^T dO, dS^T Q) is one call of a small register-tiled
// gemm over per-thread scratch (K and V are copied transposed so all operands are row-major). The
// keys a row attends are a prefix, so each block of rows only computes up to its largest prefix
// end, and no mask is ever built.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace zsar {
namespace cpu {
namespace ZSAR_CPU_ISA {
namespace {

// Portable SIMD through GCC/Clang vector extensions: one Vec is 32 bytes (an AVX2 register in the
// avx2 build; the baseline build splits it into two SSE2 registers).
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t kWidth = 32 / sizeof(T);
constexpr int64_t kPad = 8;  // key dimensions are padded to a multiple of 8 (>= one Vec of either type)

template <typename T>
inline Vec<T> loadu(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void storeu(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// e^x for a whole array, written so the compiler vectorises it: exp(x) = 2^k * e^r with
// k = round(x / ln 2), |r| <= ln2 / 2, e^r by the Cephes expf polynomial (~1.5 ulp). 2^k is built
// as integer bits and reinterpreted in bulk (a per-element bit cast would block vectorisation).
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
      const float hi = xj > 88.0f ? 88.0f : xj;
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
      bits[j] = (static_cast<int32_t>(k) + 127) << 23;
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
template <int MR, int NV, typename T>
inline void gemm_tile(int64_t k, const T* __restrict A, int64_t lda, const T* __restrict B, int64_t ldb,
                      T* __restrict C, int64_t ldc) {
  constexpr int64_t W = kWidth<T>;
  Vec<T> acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Vec<T>{};
  for (int64_t p = 0; p < k; ++p) {
    Vec<T> b[NV];
    for (int v = 0; v < NV; ++v) b[v] = loadu(B + p * ldb + v * W);
    for (int r = 0; r < MR; ++r) {
      const T a = A[r * lda + p];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) storeu(C + r * ldc + v * W, acc[r][v]);
}

template <int MR, typename T>
inline void gemm_rows(int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                      int64_t ldc) {
  constexpr int64_t W = kWidth<T>;
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) gemm_tile<MR, 2>(k, A, lda, B + j, ldb, C + j, ldc);
  if (j + W <= n) {
    gemm_tile<MR, 1>(k, A, lda, B + j, ldb, C + j, ldc);
    j += W;
  }
  for (; j < n; ++j) {  // a head dim that is not a multiple of the vector width
    for (int r = 0; r < MR; ++r) {
      T acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += A[r * lda + p] * B[p * ldb + j];
      C[r * ldc + j] = acc;
    }
  }
}

// C[0:m, 0:n) = A[0:m, 0:k) . B[0:k, 0:n), all row-major with the given row strides: the one
// small-matrix primitive of these kernels. k may be 0 (C is zeroed).
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
          int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) gemm_rows<4>(n, k, A + i * lda, lda, B, ldb, C + i * ldc, ldc);
  switch (m - i) {
    case 3: gemm_rows<3>(n, k, A + i * lda, lda, B, ldb, C + i * ldc, ldc); break;
    case 2: gemm_rows<2>(n, k, A + i * lda, lda, B, ldb, C + i * ldc, ldc); break;
    case 1: gemm_rows<1>(n, k, A + i * lda, lda, B, ldb, C + i * ldc, ldc); break;
    default: break;
  }
}

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < n; ++d) acc += a[d] * b[d];
  return acc;
}

// dst[0:cols, 0:rows) = src[0:rows, 0:cols) transposed; dst columns rows..round_up(rows, kPad) are
// zeroed so that padded vector lanes read finite values.
template <typename T>
inline void transpose(const T* __restrict src, int64_t rows, int64_t cols, int64_t lds,
                      T* __restrict dst, int64_t ldd) {
  const int64_t padded = round_up(rows, kPad);
  // Row-major reads (contiguous, vector loads) and strided scalar stores: stores do not stall the
  // loop the way a chain of strided loads does.
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict in = src + r * lds;
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r] = in[c];
  }
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = rows; r < padded; ++r) dst[c * ldd + r] = T(0);
}

int resolve_threads(int num_threads) {
#ifdef _OPENMP
  return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
  (void)num_threads;
  return 1;
#endif
}

// Per-thread scratch of one (b, h) slice; `ld` = L rounded up to kPad.
template <typename T>
struct Scratch {
  int64_t ld;
  std::vector<T> kt, vt;  // (D, ld): K^T, V^T
  std::vector<T> p, ds;   // (L, ld): probabilities, score gradients (zero past each row's end)
  std::vector<T> pt, dst; // (L, ld): their transposes
  Scratch(int64_t L, int64_t D, bool backward)
      : ld(round_up(L, kPad)), kt(D * ld), vt(backward ? D * ld : 0), p(L * ld),
        ds(backward ? L * ld : 0), pt(backward ? L * ld : 0), dst(backward ? L * ld : 0) {}
};

// Rows i0..i0+rows of one slice: the largest key_end among them (keys are a prefix per row).
inline int64_t block_key_end(int64_t i0, int64_t rows, const MaskedAttentionShape& s, int64_t n_text) {
  int64_t end = 0;
  for (int64_t i = i0; i < i0 + rows; ++i)
    end = std::max(end, masked_attention_key_end(i, s.n_visual, n_text, s.full));
  return end;
}

constexpr int64_t kRowBlock = 4;  // rows per gemm call, matching the register tile

// p[i, 0:ld) = softmax-ready probabilities of the valid rows: exp(scale * q_i . k_j - lse_i) for
// j < key_end(i), 0 elsewhere. With `lse` == nullptr the row maximum/normaliser is computed and
// written to `lse_out` (forward); otherwise the saved log-sum-exp is used (backward).
template <typename T>
void probabilities(const MaskedAttentionShape& s, int64_t n_text, int64_t n_valid, const T* q,
                   Scratch<T>& w, const T* lse, T* lse_out) {
  const int64_t D = s.head_dim, ld = w.ld;
  const T scale = static_cast<T>(s.scale);
  for (int64_t i0 = 0; i0 < n_valid; i0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, n_valid - i0);
    const int64_t cols = round_up(block_key_end(i0, rows, s, n_text), kPad);
    gemm(rows, cols, D, q + i0 * D, D, w.kt.data(), ld, w.p.data() + i0 * ld, ld);
  }
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < n_valid; ++i) {
    const int64_t end = masked_attention_key_end(i, s.n_visual, n_text, s.full);
    // Whole vectors up to `padded` (<= ld); lanes past `end` are set to -inf so that exp gives 0
    // and every reduction can run vectorised without a remainder loop.
    const int64_t padded = round_up(end, kPad);
    T* __restrict p = w.p.data() + i * ld;
    const T shift_in = lse == nullptr ? T(0) : lse[i];
#pragma omp simd
    for (int64_t j = 0; j < padded; ++j) p[j] = p[j] * scale - shift_in;
    for (int64_t j = end; j < padded; ++j) p[j] = kNegInf;
    T m = T(0);
    if (lse == nullptr) {
      m = kNegInf;
#pragma omp simd reduction(max : m)
      for (int64_t j = 0; j < padded; ++j) m = std::max(m, p[j]);
#pragma omp simd
      for (int64_t j = 0; j < padded; ++j) p[j] -= m;
    }
    exp_inplace(p, padded);
    std::fill(p + padded, p + ld, T(0));
    if (lse == nullptr) {
      T l = 0;
#pragma omp simd reduction(+ : l)
      for (int64_t j = 0; j < padded; ++j) l += p[j];
      const T inv_l = T(1) / l;
#pragma omp simd
      for (int64_t j = 0; j < padded; ++j) p[j] *= inv_l;
      lse_out[i] = m + std::log(l);
    }
  }
}

// Runs body(bh, n_text, n_valid, scratch) for every (batch, head) slice in parallel; each thread
// owns one Scratch. Dynamic scheduling: tasks are microseconds each and a core may be busy.
template <typename T, typename Body>
void for_each_slice(const MaskedAttentionShape& s, const int32_t* n_text, bool backward, int num_threads,
                    Body body) {
  const int64_t BH = s.batch * s.heads;
#pragma omp parallel num_threads(resolve_threads(num_threads))
  {
    Scratch<T> w(s.seq_len, s.head_dim, backward);
#pragma omp for schedule(dynamic, 4)
    for (int64_t bh = 0; bh < BH; ++bh) {
      const int64_t nt = masked_attention_clamp_text(n_text[bh / s.heads], s.n_visual, s.seq_len);
      body(bh, nt, s.n_visual + nt, w);
    }
  }
}

template <typename T>
void forward(const MaskedAttentionFwdArgs& a, int num_threads) {
  const auto& s = a.shape;
  const int64_t L = s.seq_len, D = s.head_dim;
  for_each_slice<T>(s, a.n_text, /*backward=*/false, num_threads,
                    [&](int64_t bh, int64_t n_text, int64_t n_valid, Scratch<T>& w) {
      const int64_t off = bh * L * D, ld = w.ld;
      const T* q = static_cast<const T*>(a.q) + off;
      const T* k = static_cast<const T*>(a.k) + off;
      const T* v = static_cast<const T*>(a.v) + off;
      T* o = static_cast<T*>(a.out) + off;
      T* lse = static_cast<T*>(a.lse) + bh * L;  // float, or double for float64 inputs

      transpose(k, n_valid, D, D, w.kt.data(), ld);
      probabilities(s, n_text, n_valid, q, w, static_cast<const T*>(nullptr), lse);
      for (int64_t i0 = 0; i0 < n_valid; i0 += kRowBlock) {  // O = P V
        const int64_t rows = std::min(kRowBlock, n_valid - i0);
        gemm(rows, D, block_key_end(i0, rows, s, n_text), w.p.data() + i0 * ld, ld, v, D, o + i0 * D, D);
      }
      std::fill(o + n_valid * D, o + L * D, T(0));  // padding rows
      std::fill(lse + n_valid, lse + L, T(0));
  });
}

template <typename T>
void backward(const MaskedAttentionBwdArgs& a, int num_threads) {
  const auto& s = a.shape;
  const int64_t L = s.seq_len, D = s.head_dim;
  const T scale = static_cast<T>(s.scale);
  for_each_slice<T>(s, a.n_text, /*backward=*/true, num_threads,
                    [&](int64_t bh, int64_t n_text, int64_t n_valid, Scratch<T>& w) {
      const int64_t off = bh * L * D, ld = w.ld;
      const T* q = static_cast<const T*>(a.q) + off;
      const T* k = static_cast<const T*>(a.k) + off;
      const T* v = static_cast<const T*>(a.v) + off;
      const T* o = static_cast<const T*>(a.out) + off;
      const T* dout = static_cast<const T*>(a.dout) + off;
      const T* lse = static_cast<const T*>(a.lse) + bh * L;
      T* dq = static_cast<T*>(a.dq) + off;
      T* dk = static_cast<T*>(a.dk) + off;
      T* dv = static_cast<T*>(a.dv) + off;

      transpose(k, n_valid, D, D, w.kt.data(), ld);
      transpose(v, n_valid, D, D, w.vt.data(), ld);
      probabilities(s, n_text, n_valid, q, w, lse, static_cast<T*>(nullptr));
      for (int64_t i0 = 0; i0 < n_valid; i0 += kRowBlock) {  // dP = dO V^T into ds
        const int64_t rows = std::min(kRowBlock, n_valid - i0);
        const int64_t cols = round_up(block_key_end(i0, rows, s, n_text), kPad);
        gemm(rows, cols, D, dout + i0 * D, D, w.vt.data(), ld, w.ds.data() + i0 * ld, ld);
      }
      for (int64_t i = 0; i < n_valid; ++i) {  // dS = scale * P * (dP - rowsum(dO * O))
        const int64_t end = masked_attention_key_end(i, s.n_visual, n_text, s.full);
        const T delta = dot(dout + i * D, o + i * D, D);
        const T* p = w.p.data() + i * ld;
        T* ds = w.ds.data() + i * ld;
        for (int64_t j = 0; j < end; ++j) ds[j] = scale * p[j] * (ds[j] - delta);
        std::fill(ds + end, ds + ld, T(0));
      }
      for (int64_t i0 = 0; i0 < n_valid; i0 += kRowBlock) {  // dQ = dS K
        const int64_t rows = std::min(kRowBlock, n_valid - i0);
        gemm(rows, D, block_key_end(i0, rows, s, n_text), w.ds.data() + i0 * ld, ld, k, D, dq + i0 * D, D);
      }
      // dV = P^T dO and dK = dS^T Q over the valid queries (zero entries where not attended).
      transpose(w.p.data(), n_valid, n_valid, ld, w.pt.data(), ld);
      transpose(w.ds.data(), n_valid, n_valid, ld, w.dst.data(), ld);
      gemm(n_valid, D, n_valid, w.pt.data(), ld, dout, D, dv, D);
      gemm(n_valid, D, n_valid, w.dst.data(), ld, q, D, dk, D);
      // Padding queries get no gradient, and no query attends a padding key.
      std::fill(dq + n_valid * D, dq + L * D, T(0));
      std::fill(dk + n_valid * D, dk + L * D, T(0));
      std::fill(dv + n_valid * D, dv + L * D, T(0));
  });
}

}  // namespace

void fwd(const MaskedAttentionFwdArgs& args, ScalarType dtype, int num_threads) {
  if (dtype == ScalarType::Float32) return forward<float>(args, num_threads);
  return forward<double>(args, num_threads);
}

void bwd(const MaskedAttentionBwdArgs& args, ScalarType dtype, int num_threads) {
  if (dtype == ScalarType::Float32) return backward<float>(args, num_threads);
  return backward<double>(args, num_threads);
}

}  // namespace ZSAR_CPU_ISA
}  // namespace cpu
}  // namespace zsar
