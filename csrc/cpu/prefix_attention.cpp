// CPU kernels of the fused masked attention; the mask kinds and arguments are in
// csrc/include/zsar/attention.h.
//
// Compiled once per instruction set (see CMakeLists.txt: ZSAR_CPU_ISA = avx2 / baseline); the
// entry points in dispatch.cpp pick the best one the running CPU supports.
//
// One OpenMP task per (batch, head). ResT sequences are short (L ~ 25): a (b, h) slice fits in L1,
// and every product (Q K^T, P V, dO V^T, dS K, P^T dO, dS^T Q) is one call of a small register-tiled
// gemm over per-thread scratch (K and V are copied transposed so all operands are row-major). The
// keys a row attends are a prefix, so each block of rows only computes up to its largest prefix
// end, and no mask is ever built.
//
// Float32 with head_dim % 8 == 0 in the avx2 build takes the faster path in namespace `fast` below
// (no transposes, dot tiles for scores, prefetching); the generic code serves float64, other head
// dims and the baseline build.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "cpu_kernels.h"
#include "simd.h"
#include "simd_avx2.h"
#include "slices.h"

namespace zsar {
namespace cpu {
namespace ZSAR_CPU_ISA {
namespace {

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
inline int64_t block_key_end(int64_t i0, int64_t rows, const SampleMask& m) {
  int64_t end = 0;
  for (int64_t i = i0; i < i0 + rows; ++i) end = std::max(end, m.key_end(i));
  return end;
}

constexpr int64_t kRowBlock = 4;  // rows per gemm call, matching the register tile

// p[i, 0:ld) = softmax-ready probabilities of the valid rows: exp(scale * q_i . k_j - lse_i) for
// j < key_end(i), 0 elsewhere. With `lse` == nullptr the row maximum/normaliser is computed and
// written to `lse_out` (forward); otherwise the saved log-sum-exp is used (backward).
template <typename T>
void probabilities(const AttentionProblem& s, const SampleMask& mask, const T* q, Scratch<T>& w,
                   const T* lse, T* lse_out) {
  const int64_t D = s.head_dim, ld = w.ld, n_valid = mask.n_valid;
  const T scale = static_cast<T>(s.scale);
  for (int64_t i0 = 0; i0 < n_valid; i0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, n_valid - i0);
    const int64_t cols = round_up(block_key_end(i0, rows, mask), kPad);
    gemm(rows, cols, D, q + i0 * D, D, w.kt.data(), ld, w.p.data() + i0 * ld, ld);
  }
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < n_valid; ++i) {
    const int64_t end = mask.key_end(i);
    // Whole vectors up to `padded` (<= ld); lanes past `end` are set to -inf so that exp gives 0
    // and every reduction can run vectorised without a remainder loop.
    const int64_t padded = round_up(end, kPad);
    T* __restrict p = w.p.data() + i * ld;
    // Scores are scaled and rounded before any shift (separate loops, so no fused multiply-add):
    // the backward must see exactly the values the forward took the maximum of. With a huge
    // scale, an unrounded product minus the saved lse could exceed 0 by half an ulp of the lse.
#pragma omp simd
    for (int64_t j = 0; j < padded; ++j) p[j] *= scale;
    if (lse != nullptr) {
      const T shift = lse[i];
#pragma omp simd
      for (int64_t j = 0; j < padded; ++j) p[j] -= shift;
    }
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
      // A +inf score makes the row maximum +inf and l NaN; the log-sum-exp is then +inf (as in
      // torch.logsumexp), so the backward gives such a row NaN only at its +inf keys.
      lse_out[i] = m == std::numeric_limits<T>::infinity() ? m : m + std::log(l);
    }
  }
}
// Generic kernels: slices handed out 4 at a time, each thread with one Scratch.
constexpr int64_t kSliceChunk = 4;

template <typename T>
void forward(const AttentionForward& a) {
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim;
  for_each_slice(s, a.exec.num_threads, kSliceChunk, [&] { return Scratch<T>(L, D, /*backward=*/false); },
                 [&](int64_t bh, const SampleMask& m, Scratch<T>& w) {
      const int64_t off = bh * L * D, ld = w.ld, n_valid = m.n_valid;
      const T* q = static_cast<const T*>(a.q) + off;
      const T* k = static_cast<const T*>(a.k) + off;
      const T* v = static_cast<const T*>(a.v) + off;
      T* o = static_cast<T*>(a.out) + off;
      T* lse = static_cast<T*>(a.lse) + bh * L;  // float, or double for float64 inputs

      transpose(k, n_valid, D, D, w.kt.data(), ld);
      probabilities(s, m, q, w, static_cast<const T*>(nullptr), lse);
      for (int64_t i0 = 0; i0 < n_valid; i0 += kRowBlock) {  // O = P V
        const int64_t rows = std::min(kRowBlock, n_valid - i0);
        gemm(rows, D, block_key_end(i0, rows, m), w.p.data() + i0 * ld, ld, v, D, o + i0 * D, D);
      }
      std::fill(o + n_valid * D, o + L * D, T(0));  // padding rows
      std::fill(lse + n_valid, lse + L, T(0));
  });
}

template <typename T>
void backward(const AttentionBackward& a) {
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim;
  const T scale = static_cast<T>(s.scale);
  for_each_slice(s, a.exec.num_threads, kSliceChunk, [&] { return Scratch<T>(L, D, /*backward=*/true); },
                 [&](int64_t bh, const SampleMask& m, Scratch<T>& w) {
      const int64_t off = bh * L * D, ld = w.ld, n_valid = m.n_valid;
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
      probabilities(s, m, q, w, lse, static_cast<T*>(nullptr));
      for (int64_t i0 = 0; i0 < n_valid; i0 += kRowBlock) {  // dP = dO V^T into ds
        const int64_t rows = std::min(kRowBlock, n_valid - i0);
        const int64_t cols = round_up(block_key_end(i0, rows, m), kPad);
        gemm(rows, cols, D, dout + i0 * D, D, w.vt.data(), ld, w.ds.data() + i0 * ld, ld);
      }
      for (int64_t i = 0; i < n_valid; ++i) {  // dS = scale * P * (dP - rowsum(dO * O))
        const int64_t end = m.key_end(i);
        const T delta = dot(dout + i * D, o + i * D, D);
        const T* p = w.p.data() + i * ld;
        T* ds = w.ds.data() + i * ld;
        for (int64_t j = 0; j < end; ++j) ds[j] = scale * p[j] * (ds[j] - delta);
        std::fill(ds + end, ds + ld, T(0));
      }
      for (int64_t i0 = 0; i0 < n_valid; i0 += kRowBlock) {  // dQ = dS K
        const int64_t rows = std::min(kRowBlock, n_valid - i0);
        gemm(rows, D, block_key_end(i0, rows, m), w.ds.data() + i0 * ld, ld, k, D, dq + i0 * D, D);
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


#if defined(__AVX2__) && defined(__FMA__)
// ---- float32 fast path (AVX2 + FMA, head_dim a multiple of 8) -------------------------------------
//
// Per (b, h) slice, everything in L1 and without any transpose:
//   scores S = Q K^T and dP = dO V^T: "dot" tiles of 2 queries x 4 keys that run along the head dim
//     (8 accumulators) and reduce with horizontal adds, so K and V are read row-major as stored;
//   O = P V, dQ = dS K: "broadcast" tiles of up to 6 rows x 16 columns (12 accumulators);
//   dV = P^T dO, dK = dS^T Q: the same tiles reading P / dS down columns (a broadcast does not care
//     about the stride), so neither P nor dS is transposed.
// The keys a query attends form a prefix [0, key_end); each tile only runs over the keys / queries
// its rows can see, and P / dS are stored zero past each row's end.
namespace fast {

using namespace vec8;  // exp8, log8, hsum, hmax, scaled, lane_mask (simd_avx2.h)

// Software prefetch of the next slice, spread over the current one: each tensor's slice is ~6 KB
// and crosses 4 KB pages, where the hardware stream prefetchers stop and retrain, so a large batch
// otherwise waits on memory. step(n) issues the next n cache-line prefetches.
struct Prefetcher {
  const char* base[8];
  bool write[8];
  int64_t bytes[8];
  int n = 0, cur = 0;
  int64_t off = 0;
  void clear() { n = cur = 0, off = 0; }
  void add(const void* p, int64_t nbytes, bool for_write) {
    base[n] = static_cast<const char*>(p), bytes[n] = nbytes, write[n] = for_write, ++n;
  }
  inline void step(int k) {
    for (; k > 0 && cur < n; --k) {
      if (write[cur]) __builtin_prefetch(base[cur] + off, 1, 3);
      else __builtin_prefetch(base[cur] + off, 0, 3);
      off += 64;
      if (off >= bytes[cur]) off = 0, ++cur;
    }
  }
  void finish() { step(1 << 30); }
};

// out0[0:6] = a0 . b_t, out1[0:6] = a1 . b_t (t < 6) over D (a multiple of 8): 12 accumulators, so
// the FMA chains (8 long for D = 64) keep both FMA pipes busy instead of waiting on latency.
inline void dot_2x6(int64_t D, const float* __restrict a0, const float* __restrict a1,
                    const float* const* __restrict b, float* __restrict out0, float* __restrict out1) {
  const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3], *b4 = b[4], *b5 = b[5];
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c04 = c00, c05 = c00;
  __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00, c14 = c00, c15 = c00;
  for (int64_t d = 0; d < D; d += 8) {
    const __m256 x0 = _mm256_loadu_ps(a0 + d), x1 = _mm256_loadu_ps(a1 + d);
#define ZSAR_KEY(t)                                  \
    {                                                \
      __m256 y = _mm256_loadu_ps(b##t + d);          \
      __asm__("" : "+x"(y)); /* one load, not two */ \
      c0##t = _mm256_fmadd_ps(x0, y, c0##t);         \
      c1##t = _mm256_fmadd_ps(x1, y, c1##t);         \
    }
    ZSAR_KEY(0) ZSAR_KEY(1) ZSAR_KEY(2) ZSAR_KEY(3) ZSAR_KEY(4) ZSAR_KEY(5)
#undef ZSAR_KEY
  }
  // Keys 0-3: hadd tree -> [row0 partial sums | row0 other half], then add the 128-bit halves.
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(c00, c01), _mm256_hadd_ps(c02, c03));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(c10, c11), _mm256_hadd_ps(c12, c13));
  const __m256 r = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
  // Keys 4-5 of both rows: [r0k4 r0k5 r1k4 r1k5] after two hadds and a 128-bit fold.
  const __m256 v = _mm256_hadd_ps(_mm256_hadd_ps(c04, c05), _mm256_hadd_ps(c14, c15));
  const __m128 w = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  _mm_storeu_ps(out0, _mm256_castps256_ps128(r));
  _mm_storeu_ps(out1, _mm256_extractf128_ps(r, 1));
  _mm_storel_pi(reinterpret_cast<__m64*>(out0 + 4), w);
  _mm_storeh_pi(reinterpret_cast<__m64*>(out1 + 4), w);
}

constexpr int64_t kDotKeys = 6;  // keys per dot tile

// out[i * ld + j] = a_i . b_j for rows i < n_rows and (at least) keys j < key_end(i), in groups of 6
// keys (ld must allow L + 5 columns); a and b are (L, D) row-major. Key rows past L are never read
// (clamped to row 0, results unused); an odd last row is computed twice.
template <typename EndFn>
void dot_rows(int64_t n_rows, int64_t L, int64_t D, const float* a, const float* b, float* out, int64_t ld,
              EndFn key_end, Prefetcher& pf) {
  for (int64_t i0 = 0; i0 < n_rows; i0 += 2) {
    const int64_t i1 = std::min(i0 + 1, n_rows - 1);
    const int64_t end = std::max(key_end(i0), key_end(i1));
    float* o0 = out + i0 * ld;
    float* o1 = i1 == i0 ? o0 : out + i1 * ld;
    for (int64_t j0 = 0; j0 < end; j0 += kDotKeys) {
      const float* bj[kDotKeys];
      for (int64_t t = 0; t < kDotKeys; ++t) bj[t] = b + (j0 + t < L ? j0 + t : 0) * D;
      dot_2x6(D, a + i0 * D, a + i1 * D, bj, o0 + j0, o1 + j0);
      pf.step(4);
    }
  }
}

// C[r, 0:8*NV) = sum_{p in [k0, k1)} A(r, p) * B[p, 0:8*NV) for r < MR (<= 6), where A(r, p) is
// A[r * lda + p] (TRANS = false) or A[p * lda + r] (TRANS = true); rows optionally scaled. The
// accumulators are named variables (an array of vectors made GCC keep them on the stack).
template <int MR, int NV, bool TRANS>
inline void bcast_tile(int64_t k0, int64_t k1, const float* __restrict A, int64_t lda, const float* __restrict B,
                       int64_t ldb, float* __restrict C, int64_t ldc, const float* __restrict row_scale,
                       bool stream) {
  static_assert(MR >= 1 && MR <= 6 && (NV == 1 || NV == 2), "tile shape");
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const int64_t rs = TRANS ? 1 : lda, ks = TRANS ? lda : 1;
  const float* a = A + k0 * ks;
  const float* b = B + k0 * ldb;
  for (int64_t p = k0; p < k1; ++p, a += ks, b += ldb) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = NV > 1 ? _mm256_loadu_ps(b + 8) : b0;
#define ZSAR_ROW(r)                                                   \
    if (MR > r) {                                                     \
      const __m256 x = _mm256_broadcast_ss(a + r * rs);               \
      c##r##0 = _mm256_fmadd_ps(x, b0, c##r##0);                      \
      if (NV > 1) c##r##1 = _mm256_fmadd_ps(x, b1, c##r##1);          \
    }
    ZSAR_ROW(0) ZSAR_ROW(1) ZSAR_ROW(2) ZSAR_ROW(3) ZSAR_ROW(4) ZSAR_ROW(5)
#undef ZSAR_ROW
  }
#define ZSAR_STORE(r)                                                                  \
  if (MR > r) {                                                                        \
    const __m256 sc = _mm256_set1_ps(row_scale != nullptr ? row_scale[r] : 1.0f);      \
    if (NV > 1 && stream) { /* one whole 64-byte line */                               \
      _mm256_stream_ps(C + r * ldc, _mm256_mul_ps(c##r##0, sc));                       \
      _mm256_stream_ps(C + r * ldc + 8, _mm256_mul_ps(c##r##1, sc));                   \
    } else {                                                                           \
      _mm256_storeu_ps(C + r * ldc, _mm256_mul_ps(c##r##0, sc));                       \
      if (NV > 1) _mm256_storeu_ps(C + r * ldc + 8, _mm256_mul_ps(c##r##1, sc));       \
    }                                                                                  \
  }
  ZSAR_STORE(0) ZSAR_STORE(1) ZSAR_STORE(2) ZSAR_STORE(3) ZSAR_STORE(4) ZSAR_STORE(5)
#undef ZSAR_STORE
}

template <int MR, bool TRANS>
inline void bcast_rows(int64_t D, int64_t k0, int64_t k1, const float* A, int64_t lda, const float* B,
                       float* C, const float* row_scale, bool stream, Prefetcher& pf) {
  int64_t c = 0;
  for (; c + 16 <= D; c += 16) {
    bcast_tile<MR, 2, TRANS>(k0, k1, A, lda, B + c, D, C + c, D, row_scale, stream);
    pf.step(4);
  }
  if (c < D) bcast_tile<MR, 1, TRANS>(k0, k1, A, lda, B + c, D, C + c, D, row_scale, false);
}

// C rows [0, n) (row stride D) = A-rows . B over k ranges given by krange(r0, rows) -> (k0, k1), with
// the rows split into near-equal blocks of at most 6 (so no block is a latency-bound sliver).
// A(r, p) is A[r * lda + p], or A[p * lda + r] when TRANS.
template <bool TRANS, typename KRange>
void bcast_gemm(int64_t n, int64_t D, const float* A, int64_t lda, const float* B, float* C,
                const float* row_scale, bool stream, Prefetcher& pf, KRange krange) {
  if (n <= 0) return;
  const int64_t blocks = (n + 5) / 6, base = n / blocks, extra = n % blocks;
  int64_t r0 = 0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t rows = base + (blk < extra ? 1 : 0);
    int64_t k0, k1;
    krange(r0, rows, k0, k1);
    const float* Ab = TRANS ? A + r0 : A + r0 * lda;
    float* Cb = C + r0 * D;
    const float* sb = row_scale != nullptr ? row_scale + r0 : nullptr;
    switch (rows) {
      case 6: bcast_rows<6, TRANS>(D, k0, k1, Ab, lda, B, Cb, sb, stream, pf); break;
      case 5: bcast_rows<5, TRANS>(D, k0, k1, Ab, lda, B, Cb, sb, stream, pf); break;
      case 4: bcast_rows<4, TRANS>(D, k0, k1, Ab, lda, B, Cb, sb, stream, pf); break;
      case 3: bcast_rows<3, TRANS>(D, k0, k1, Ab, lda, B, Cb, sb, stream, pf); break;
      case 2: bcast_rows<2, TRANS>(D, k0, k1, Ab, lda, B, Cb, sb, stream, pf); break;
      default: bcast_rows<1, TRANS>(D, k0, k1, Ab, lda, B, Cb, sb, stream, pf); break;
    }
    r0 += rows;
  }
}

// Per-thread scratch: (L, ld) score / probability matrices, ld = L + kDotKeys - 1 rounded up to 8.
struct Scratch {
  int64_t ld;
  std::vector<float> s, dp, p, ds, inv_l, m;
  Prefetcher pf;
  bool stream = false;  // write the outputs with streaming stores (see stream_outputs)
  Scratch(int64_t L, bool backward)
      : ld(round_up(L + kDotKeys - 1, 8)), s(L * ld), dp(backward ? L * ld : 0), p(L * ld), ds(backward ? L * ld : 0),
        inv_l(round_up(L, 8)), m(round_up(L, 8)) {}
};

// Outputs of at least this many bytes (per tensor) are written with streaming (non-temporal)
// stores: they are far larger than the private caches, so they would be evicted before anyone
// reads them, and a normal store first reads every line it writes (read-for-ownership), i.e. a
// quarter of a memory-bound backward's traffic. Measured at B=64: -2..-7% alone, -5..-10% with
// SDPA running in between (bench/RESULTS.md).
constexpr int64_t kStreamBytes = int64_t(4) << 20;

// Streaming needs 32-byte aligned rows: true for head_dim % 8 == 0 (this path) and aligned bases.
inline bool stream_outputs(const AttentionProblem& s, std::initializer_list<const void*> outputs) {
  if (s.batch * s.heads * s.seq_len * s.head_dim * static_cast<int64_t>(sizeof(float)) < kStreamBytes) return false;
  for (const void* p : outputs)
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0) return false;
  return true;
}

// Runs body(bh, sample mask, scratch) for every (batch, head) slice (for_each_slice), one Scratch
// per thread, in chunks of 8 consecutive slices. While a slice runs, the next one's inputs (and,
// unless the outputs are streamed, its outputs) are prefetched. Scratch::stream tells the body how
// to store outputs.
template <typename Body>
void for_each_slice_fast(const AttentionProblem& s, int num_threads, bool backward,
                         std::initializer_list<const void*> inputs, std::initializer_list<const void*> outputs,
                         Body body) {
  const bool streamed_outputs = stream_outputs(s, outputs);
  const int64_t BH = s.batch * s.heads, slice = s.seq_len * s.head_dim * static_cast<int64_t>(sizeof(float));
  constexpr int64_t kChunk = 8;
  for_each_slice(
      s, num_threads, kChunk,
      [&] {
        Scratch w(s.seq_len, backward);
        w.stream = streamed_outputs;
        return w;
      },
      [&](int64_t bh, const SampleMask& mask, Scratch& w) {
        w.pf.clear();
        if (bh + 1 < BH) {  // at a chunk end this may be another thread's slice: harmless
          const int64_t n_valid1 = sample_mask(s.mask, (bh + 1) / s.heads, s.seq_len).n_valid;
          const int64_t in_bytes = n_valid1 * s.head_dim * static_cast<int64_t>(sizeof(float));
          for (const void* t : inputs) w.pf.add(static_cast<const char*>(t) + (bh + 1) * slice, in_bytes, false);
          if (!streamed_outputs)
            for (const void* t : outputs) w.pf.add(static_cast<const char*>(t) + (bh + 1) * slice, slice, true);
        }
        body(bh, mask, w);
        w.pf.finish();
        // Streaming stores are weakly ordered: drained before the slice counts as done (another
        // thread, the caller, reads the outputs once every item is).
        if (streamed_outputs) _mm_sfence();
      });
}

void forward(const AttentionForward& a) {
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim;
  const float scale = static_cast<float>(s.scale);
  for_each_slice_fast(s, a.exec.num_threads, /*backward=*/false, {a.q, a.k, a.v}, {a.out},
                      [&](int64_t bh, const SampleMask& mask, Scratch& w) {
    const int64_t off = bh * L * D, ld = w.ld, n_valid = mask.n_valid;
    const float* q = static_cast<const float*>(a.q) + off;
    const float* k = static_cast<const float*>(a.k) + off;
    const float* v = static_cast<const float*>(a.v) + off;
    float* o = static_cast<float*>(a.out) + off;
    float* lse = static_cast<float*>(a.lse) + bh * L;
    auto key_end = [&](int64_t i) { return mask.key_end(i); };

    dot_rows(n_valid, L, D, q, k, w.s.data(), ld, key_end, w.pf);
    const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    const int64_t row_vecs = (n_valid + 7) / 8;  // P is read up to column n_valid: zero past each end
    for (int64_t i = 0; i < n_valid; ++i) {  // P = exp(scale S - rowmax), unnormalised; 1/l kept aside
      const int64_t end = key_end(i), nvec = (end + 7) / 8;
      const float* sr = w.s.data() + i * ld;
      float* pr = w.p.data() + i * ld;
      __m256 mx = ninf;
      for (int64_t c = 0; c < nvec; ++c)
        mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, scaled(_mm256_loadu_ps(sr + 8 * c), vscale), lane_mask(end, c)));
      const float m = hmax(mx);
      const __m256 vm = _mm256_set1_ps(m);
      __m256 sum = _mm256_setzero_ps();
      for (int64_t c = 0; c < nvec; ++c) {
        const __m256 mask = lane_mask(end, c);
        const __m256 x = _mm256_blendv_ps(ninf, _mm256_sub_ps(scaled(_mm256_loadu_ps(sr + 8 * c), vscale), vm), mask);
        const __m256 e = exp8(x);
        sum = _mm256_add_ps(sum, e);
        _mm256_storeu_ps(pr + 8 * c, e);
      }
      for (int64_t c = nvec; c < row_vecs; ++c) _mm256_storeu_ps(pr + 8 * c, _mm256_setzero_ps());
      w.inv_l[i] = hsum(sum);  // l for now
      w.pf.step(4);
      w.m[i] = m;
    }
    // 1 / l and lse = m + log(l), 8 rows at a time (no scalar divide/log chain per row); a row
    // maximum of +inf gives lse = +inf (l is NaN then), as in the generic path.
    for (int64_t i = n_valid; i < round_up(n_valid, 8); ++i) w.inv_l[i] = 1.0f, w.m[i] = 0.0f;
    const __m256 pinf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < n_valid; i += 8) {
      const __m256 l = _mm256_loadu_ps(w.inv_l.data() + i), m = _mm256_loadu_ps(w.m.data() + i);
      _mm256_storeu_ps(w.inv_l.data() + i, _mm256_div_ps(_mm256_set1_ps(1.0f), l));
      _mm256_storeu_ps(w.m.data() + i, _mm256_blendv_ps(_mm256_add_ps(m, log8(l)), pinf, _mm256_cmp_ps(m, pinf, _CMP_EQ_OQ)));
    }
    std::copy(w.m.data(), w.m.data() + n_valid, lse);
    bcast_gemm<false>(n_valid, D, w.p.data(), ld, v, o, w.inv_l.data(), w.stream, w.pf,
                      [&](int64_t r0, int64_t rows, int64_t& k0, int64_t& k1) {
      k0 = 0;
      k1 = 0;
      for (int64_t i = r0; i < r0 + rows; ++i) k1 = std::max(k1, key_end(i));
    });
    std::fill(o + n_valid * D, o + L * D, 0.0f);
    std::fill(lse + n_valid, lse + L, 0.0f);
  });
}

void backward(const AttentionBackward& a) {
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim;
  const float scale = static_cast<float>(s.scale);
  for_each_slice_fast(s, a.exec.num_threads, /*backward=*/true, {a.q, a.k, a.v, a.out, a.dout},
                      {a.dq, a.dk, a.dv},
                      [&](int64_t bh, const SampleMask& mask, Scratch& w) {
    const int64_t off = bh * L * D, ld = w.ld, n_valid = mask.n_valid, nv = mask.n_fixed;
    const bool full = mask.full;
    const float* q = static_cast<const float*>(a.q) + off;
    const float* k = static_cast<const float*>(a.k) + off;
    const float* v = static_cast<const float*>(a.v) + off;
    const float* o = static_cast<const float*>(a.out) + off;
    const float* dout = static_cast<const float*>(a.dout) + off;
    const float* lse = static_cast<const float*>(a.lse) + bh * L;
    float* dq = static_cast<float*>(a.dq) + off;
    float* dk = static_cast<float*>(a.dk) + off;
    float* dv = static_cast<float*>(a.dv) + off;
    auto key_end = [&](int64_t i) { return mask.key_end(i); };

    dot_rows(n_valid, L, D, q, k, w.s.data(), ld, key_end, w.pf);  // S = Q K^T
    dot_rows(n_valid, L, D, dout, v, w.dp.data(), ld, key_end, w.pf);  // dP = dO V^T
    const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    const int64_t row_vecs = (n_valid + 7) / 8;  // P / dS are read up to column n_valid
    float* deltas = w.m.data();  // delta_i = dO_i . O_i, 8 rows at a time (rows past n_valid: row 0)
    for (int64_t i0 = 0; i0 < n_valid; i0 += 8) {
      int64_t r[8];
      for (int64_t t = 0; t < 8; ++t) r[t] = (i0 + t < n_valid ? i0 + t : 0) * D;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
      for (int64_t d = 0; d < D; d += 8) {
#define ZSAR_DELTA(t) \
        a##t = _mm256_fmadd_ps(_mm256_loadu_ps(dout + r[t] + d), _mm256_loadu_ps(o + r[t] + d), a##t);
        ZSAR_DELTA(0) ZSAR_DELTA(1) ZSAR_DELTA(2) ZSAR_DELTA(3) ZSAR_DELTA(4) ZSAR_DELTA(5) ZSAR_DELTA(6) ZSAR_DELTA(7)
#undef ZSAR_DELTA
      }
      const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
      const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
      _mm256_storeu_ps(deltas + i0, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                                  _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
    for (int64_t i = 0; i < n_valid; ++i) {
      const int64_t end = key_end(i), nvec = (end + 7) / 8;
      const __m256 delta = _mm256_set1_ps(deltas[i]);
      w.pf.step(4);
      const __m256 shift = _mm256_set1_ps(lse[i]);
      const float* sr = w.s.data() + i * ld;
      const float* dpr = w.dp.data() + i * ld;
      float* pr = w.p.data() + i * ld;
      float* dsr = w.ds.data() + i * ld;
      for (int64_t c = 0; c < nvec; ++c) {  // P = exp(scale S - lse), dS = scale P (dP - delta)
        const __m256 mask = lane_mask(end, c);
        const __m256 x = _mm256_blendv_ps(ninf, _mm256_sub_ps(scaled(_mm256_loadu_ps(sr + 8 * c), vscale), shift), mask);
        const __m256 p = exp8(x);
        const __m256 ds = _mm256_and_ps(
            _mm256_mul_ps(_mm256_mul_ps(p, vscale), _mm256_sub_ps(_mm256_loadu_ps(dpr + 8 * c), delta)), mask);
        _mm256_storeu_ps(pr + 8 * c, p);
        _mm256_storeu_ps(dsr + 8 * c, ds);
      }
      for (int64_t c = nvec; c < row_vecs; ++c) {
        _mm256_storeu_ps(pr + 8 * c, _mm256_setzero_ps());
        _mm256_storeu_ps(dsr + 8 * c, _mm256_setzero_ps());
      }
    }
    // dQ = dS K: query rows see keys [0, largest end in the block).
    bcast_gemm<false>(n_valid, D, w.ds.data(), ld, k, dq, nullptr, w.stream, w.pf,
                      [&](int64_t r0, int64_t rows, int64_t& k0, int64_t& k1) {
      k0 = 0;
      k1 = 0;
      for (int64_t i = r0; i < r0 + rows; ++i) k1 = std::max(k1, key_end(i));
    });
    // dV = P^T dO, dK = dS^T Q: key rows j < n_valid; the queries that can see key j are all valid
    // ones, except in mode rest where word key j is seen only by word queries i >= j.
    auto queries = [&](int64_t j0, int64_t, int64_t& k0, int64_t& k1) {
      k0 = (!full && j0 >= nv) ? j0 : 0;
      k1 = n_valid;
    };
    bcast_gemm<true>(n_valid, D, w.p.data(), ld, dout, dv, nullptr, w.stream, w.pf, queries);
    bcast_gemm<true>(n_valid, D, w.ds.data(), ld, q, dk, nullptr, w.stream, w.pf, queries);
    std::fill(dq + n_valid * D, dq + L * D, 0.0f);
    std::fill(dk + n_valid * D, dk + L * D, 0.0f);
    std::fill(dv + n_valid * D, dv + L * D, 0.0f);
  });
}

}  // namespace fast
#else
// Not built without AVX2 + FMA, where fast_path() is false: never called.
namespace fast {
inline void forward(const AttentionForward&) {}
inline void backward(const AttentionBackward&) {}
}  // namespace fast
#endif  // __AVX2__ && __FMA__

}  // namespace

void fwd(const AttentionForward& args) {
  if (args.problem.mask.kind == MaskKind::Bottleneck) return tiled_fwd(args);
  if (fast_path(args.problem)) return fast::forward(args);
  dispatch_float(args.problem.dtype, [&](auto type) { forward<typename decltype(type)::type>(args); });
}

void bwd(const AttentionBackward& args) {
  if (args.problem.mask.kind == MaskKind::Bottleneck) return tiled_bwd(args);
  if (fast_path(args.problem)) return fast::backward(args);
  dispatch_float(args.problem.dtype, [&](auto type) { backward<typename decltype(type)::type>(args); });
}

}  // namespace ZSAR_CPU_ISA
}  // namespace cpu
}  // namespace zsar
