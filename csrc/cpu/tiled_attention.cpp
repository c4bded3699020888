// Tiled CPU kernels of the fused attention for mask kinds whose valid tokens all see each other
// (today: Bottleneck, MZST's attention-bottleneck fusion); kinds and arguments are in
// csrc/include/zsar/attention.h.
//
// Compiled once per instruction set like prefix_attention.cpp (whose register-tiled gemm and exp
// helpers, simd.h, these share). A sample's valid tokens (a prefix and a suffix of the sequence)
// are seen as one dense block of n tokens ("compact" indices t -> position(t)), so padding is never
// read and never computed, and every product is a dense gemm without masking.
//   * K^T (and, for the backward, V^T) is packed once per (batch, head) slice into panels of
//     kPanel keys, each a contiguous (Dh, kPanel) block: the score micro-kernel streams one 4 KiB
//     panel (Dh = 64) from L1 while its query rows stay in registers, instead of striding by L
//     through a transposed matrix (with L a multiple of 1024 every row of that hits the same L1
//     set, and the tile thrashed the cache).
//   * forward: one OpenMP task per (batch, head, block of kQueryRows queries), so one or two
//     samples still keep every core busy; per block, key tiles of kKeyTile keys with an online
//     softmax (running maximum and normaliser, the accumulator rescaled when the maximum grows):
//     memory stays O(L * Dh) and no L x L matrix (or mask) exists for any L.
//   * backward (FlashAttention-2 style): one task per (batch, head, chunk of key tiles), see
//     backward() below; the probabilities of each (query block, key tile) are recomputed from the
//     saved log-sum-exp.
//   * the avx512 variant (a build and a processor with AVX-512F) runs the same code with 16-float
//     vectors in the products (kVecBytes); the softmax rows stay 8-wide.
// Outputs are scattered back, with exact zeros in padding rows (output, lse and gradients).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "cpu_kernels.h"
#include "simd.h"
#include "simd_avx2.h"
#include "simd_avx512.h"
#include "slices.h"

namespace zsar {
namespace cpu {
namespace ZSAR_CPU_ISA {
namespace {

// Vector width of the products: one AVX-512 register in the avx512 variant, else 32 bytes.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;
#endif
#ifndef ZSAR_TILE_ROWS
#define ZSAR_TILE_ROWS (kVecBytes == 64 ? 12 : 6)
#endif
constexpr int64_t kQueryRows = 48;  // queries per block (a multiple of the register tile's rows)
constexpr int64_t kKeyTile = 128;   // keys per online-softmax step: a 48 x 128 score tile is 24 KiB
constexpr int64_t kPanel = 2 * kVecBytes / 4;  // keys per packed K^T / V^T panel: two float vectors
// Register-tile rows of every product here (see gemm in simd.h): 6 x 2 vectors fill AVX2's 16
// registers; AVX-512 has 32, and 12 x 2 halves the loads per FMA.
constexpr int kTileRows = ZSAR_TILE_ROWS;
static_assert(kKeyTile % kPanel == 0, "key tiles are whole panels");

// The products of these kernels: C (+)= A . B, A optionally transposed (see gemm in simd.h).
template <bool ACC = false, bool TA = false, typename T>
inline void product(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                    int64_t ldc) {
  gemm<ACC, TA, kTileRows, kVecBytes>(m, n, k, A, lda, B, ldb, C, ldc);
}

// S[0:rows, 0:cols) = Q[0:rows, :] . K^T over the packed panels of keys [0, cols) (cols rounded up
// to whole panels; the zero keys of a last partial panel give scores that are never read).
template <typename T>
inline void scores(int64_t rows, int64_t cols, int64_t D, const T* q, const T* panels, T* s, int64_t lds) {
  for (int64_t p = 0; p < cols; p += kPanel) product(rows, kPanel, D, q, D, panels + p * D, kPanel, s + p, lds);
}

// Packs the slice's valid rows (compact order) as K^T panels: panel t0 / kPanel holds, at
// [d * kPanel + j], element d of valid token t0 + j (zero past the last token).
template <typename T>
void pack_panels(const T* src, const SampleMask& m, int64_t D, T* dst) {
  const int64_t n = m.n_tokens();
  for (int64_t t0 = 0; t0 < n; t0 += kPanel) {
    T* __restrict panel = dst + t0 * D;
    const int64_t cnt = std::min(kPanel, n - t0);
    for (int64_t j = 0; j < cnt; ++j) {
      const T* __restrict row = src + m.position(t0 + j) * D;
      for (int64_t d = 0; d < D; ++d) panel[d * kPanel + j] = row[d];
    }
    for (int64_t j = cnt; j < kPanel; ++j)
      for (int64_t d = 0; d < D; ++d) panel[d * kPanel + j] = T(0);
  }
}

// Valid rows [t0, t0 + rows) (compact indices) of a slice -> dst rows 0..rows.
template <typename T>
void gather_rows(const T* src, const SampleMask& m, int64_t t0, int64_t rows, int64_t D, T* dst) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * D, src + m.position(t0 + r) * D, sizeof(T) * D);
}

// src rows 0..rows -> valid rows [t0, t0 + rows) of a slice.
template <typename T>
void scatter_rows(const T* src, const SampleMask& m, int64_t t0, int64_t rows, int64_t D, T* dst) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + m.position(t0 + r) * D, src + r * D, sizeof(T) * D);
}

// Zeros the padding rows [n_valid, tail_begin) of a slice (row length D).
template <typename T>
void zero_padding(const SampleMask& m, int64_t D, T* dst) {
  std::fill(dst + m.n_valid * D, dst + m.tail_begin * D, T(0));
}

// C (+)= P[:, 0:cols) . V-rows of the keys [j0, j0 + cols) (compact), read in place from the slice
// (at most two contiguous runs: the prefix and the fusion tail).
template <typename T>
void times_rows(int64_t rows, int64_t j0, int64_t cols, const T* p, int64_t ldp, const T* v, const SampleMask& m,
                int64_t D, T* c) {
  const int64_t j1 = j0 + cols;
  if (j0 < m.n_valid) {
    const int64_t e = std::min(j1, m.n_valid);
    product<true>(rows, D, e - j0, p, ldp, v + j0 * D, D, c, D);
  }
  if (j1 > m.n_valid) {
    const int64_t b = std::max(j0, m.n_valid);
    product<true>(rows, D, j1 - b, p + (b - j0), ldp, v + m.position(b) * D, D, c, D);
  }
}

// Buffers that are allocated once per call and left uninitialised (every element read is written
// first): a std::vector would zero hundreds of MB for nothing.
template <typename T>
std::unique_ptr<T[]> uninitialised(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// One online-softmax step of a score row p[0:cols): p <- exp(scale * p - shift) where shift is
// the new running maximum m_new = max(m_old, max_j scale * p[j]) (0 while every score is -inf, so
// no -inf - -inf); returns m_new and sets `sum` to the row sum of the new p. Scores are scaled and
// rounded before any shift (no fused multiply-add): the backward must see exactly the values the
// forward took the maximum of.
template <typename T>
inline T online_softmax_row(T* __restrict p, int64_t cols, T scale, T m_old, T& sum) {
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) p[j] *= scale;
  const T m_new = std::max(m_old, max_of(p, cols));
  const T shift = m_new == -std::numeric_limits<T>::infinity() ? T(0) : m_new;
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) p[j] -= shift;
  exp_inplace(p, cols);
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < cols; ++j) acc += p[j];
  sum = acc;
  return m_new;
}

// Backward of one score row: p <- exp(scale * p - lse), ds <- scale * p * (ds - delta) on [0, cols).
template <typename T>
inline void backward_row(T* __restrict p, T* __restrict ds, int64_t cols, T scale, T lse, T delta) {
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) p[j] *= scale;
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) p[j] -= lse;
  exp_inplace(p, cols);
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) ds[j] = scale * p[j] * (ds[j] - delta);
}

#if defined(__AVX512F__)
// The float rows of the avx512 variant: the AVX2 rows below on 16 lanes (the same values per
// lane; only the row sum adds its lanes in another order).
inline float online_softmax_row(float* __restrict p, int64_t cols, float scale, float m_old, float& sum) {
  using namespace vec16;
  const __m512 vscale = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const int64_t nvec = (cols + 15) / 16;
  __m512 mx = ninf;
  for (int64_t c = 0; c < nvec; ++c)
    mx = _mm512_max_ps(mx, _mm512_mask_blend_ps(lane_mask(cols, c), ninf, scaled(_mm512_loadu_ps(p + 16 * c), vscale)));
  const float m_new = std::max(m_old, vec8::hmax(_mm256_max_ps(_mm512_castps512_ps256(mx), _mm512_extractf32x8_ps(mx, 1))));
  const __m512 shift = _mm512_set1_ps(m_new == -std::numeric_limits<float>::infinity() ? 0.0f : m_new);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t c = 0; c < nvec; ++c) {
    const __m512 x = _mm512_mask_blend_ps(lane_mask(cols, c), ninf,
                                          _mm512_sub_ps(scaled(_mm512_loadu_ps(p + 16 * c), vscale), shift));
    const __m512 e = exp16(x);
    acc = _mm512_add_ps(acc, e);
    _mm512_storeu_ps(p + 16 * c, e);
  }
  sum = vec8::hsum(_mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1)));
  return m_new;
}

inline void backward_row(float* __restrict p, float* __restrict ds, int64_t cols, float scale, float lse,
                         float delta) {
  using namespace vec16;
  const __m512 vscale = _mm512_set1_ps(scale), shift = _mm512_set1_ps(lse), vdelta = _mm512_set1_ps(delta);
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t c = 0, nvec = (cols + 15) / 16; c < nvec; ++c) {
    const __mmask16 mask = lane_mask(cols, c);
    const __m512 e = exp16(_mm512_mask_blend_ps(mask, ninf, _mm512_sub_ps(scaled(_mm512_loadu_ps(p + 16 * c), vscale), shift)));
    const __m512 d = _mm512_maskz_mov_ps(
        mask, _mm512_mul_ps(_mm512_mul_ps(e, vscale), _mm512_sub_ps(_mm512_loadu_ps(ds + 16 * c), vdelta)));
    _mm512_storeu_ps(p + 16 * c, e);
    _mm512_storeu_ps(ds + 16 * c, d);
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
// The float rows in 8-lane vectors, two passes (the maximum; exp and the sum) instead of five
// loops; the same values as the generic rows (exp8 is exp_inplace's polynomial). Score tiles are
// computed for whole 16-key panels, so whole vectors up to round_up(cols, 8) are readable; lanes
// past cols are masked to -inf (exp gives 0).
inline float online_softmax_row(float* __restrict p, int64_t cols, float scale, float m_old, float& sum) {
  using namespace vec8;
  const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const int64_t nvec = (cols + 7) / 8;
  __m256 mx = ninf;
  for (int64_t c = 0; c < nvec; ++c)
    mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, scaled(_mm256_loadu_ps(p + 8 * c), vscale), lane_mask(cols, c)));
  const float m_new = std::max(m_old, hmax(mx));
  const __m256 shift = _mm256_set1_ps(m_new == -std::numeric_limits<float>::infinity() ? 0.0f : m_new);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t c = 0; c < nvec; ++c) {
    const __m256 x = _mm256_blendv_ps(ninf, _mm256_sub_ps(scaled(_mm256_loadu_ps(p + 8 * c), vscale), shift),
                                      lane_mask(cols, c));
    const __m256 e = exp8(x);
    acc = _mm256_add_ps(acc, e);
    _mm256_storeu_ps(p + 8 * c, e);
  }
  sum = hsum(acc);
  return m_new;
}

inline void backward_row(float* __restrict p, float* __restrict ds, int64_t cols, float scale, float lse,
                         float delta) {
  using namespace vec8;
  const __m256 vscale = _mm256_set1_ps(scale), shift = _mm256_set1_ps(lse), vdelta = _mm256_set1_ps(delta);
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t c = 0, nvec = (cols + 7) / 8; c < nvec; ++c) {
    const __m256 mask = lane_mask(cols, c);
    const __m256 e = exp8(_mm256_blendv_ps(ninf, _mm256_sub_ps(scaled(_mm256_loadu_ps(p + 8 * c), vscale), shift), mask));
    const __m256 d = _mm256_and_ps(
        _mm256_mul_ps(_mm256_mul_ps(e, vscale), _mm256_sub_ps(_mm256_loadu_ps(ds + 8 * c), vdelta)), mask);
    _mm256_storeu_ps(p + 8 * c, e);
    _mm256_storeu_ps(ds + 8 * c, d);
  }
}
#endif

template <typename T>
void forward(const AttentionForward& a) {
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim, BH = s.batch * s.heads, Lp = round_up(L, kPanel);
  const T scale = static_cast<T>(s.scale);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const T* q_all = static_cast<const T*>(a.q);
  const T* k_all = static_cast<const T*>(a.k);
  const T* v_all = static_cast<const T*>(a.v);
  T* out_all = static_cast<T*>(a.out);
  T* lse_all = static_cast<T*>(a.lse);

  // Tasks: (slice, first query) for every block of every slice, slices in order.
  std::vector<std::pair<int64_t, int64_t>> tasks;
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t n = sample_mask(s.mask, bh / s.heads, L).n_tokens();
    for (int64_t i0 = 0; i0 < n; i0 += kQueryRows) tasks.emplace_back(bh, i0);
  }
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  auto panels = uninitialised<T>(BH * Lp * D);

#pragma omp parallel num_threads(resolve_threads(a.exec.num_threads))
  {
    share_slices(s, 1, [&](int64_t bh, const SampleMask& m) {
      pack_panels(k_all + bh * L * D, m, D, panels.get() + bh * Lp * D);
      zero_padding(m, D, out_all + bh * L * D);
      zero_padding(m, 1, lse_all + bh * L);
    });
    std::vector<T> qb(kQueryRows * D), o(kQueryRows * D), st(kQueryRows * kKeyTile);
    std::vector<T> row_max(kQueryRows), row_sum(kQueryRows), lse(kQueryRows);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t bh = tasks[task].first, i0 = tasks[task].second;
      const SampleMask m = sample_mask(s.mask, bh / s.heads, L);
      const int64_t n = m.n_tokens(), rows = std::min(kQueryRows, n - i0), off = bh * L * D;
      const T* kp = panels.get() + bh * Lp * D;
      gather_rows(q_all + off, m, i0, rows, D, qb.data());
      std::fill(o.begin(), o.begin() + rows * D, T(0));
      std::fill(row_max.begin(), row_max.begin() + rows, kNegInf);
      std::fill(row_sum.begin(), row_sum.begin() + rows, T(0));
      for (int64_t j0 = 0; j0 < n; j0 += kKeyTile) {
        const int64_t cols = std::min(kKeyTile, n - j0);
        T* sc = st.data();
        scores(rows, cols, D, qb.data(), kp + j0 * D, sc, kKeyTile);
        for (int64_t r = 0; r < rows; ++r) {
          T sum;
          const T m_new = online_softmax_row(sc + r * kKeyTile, cols, scale, row_max[r], sum);
          if (j0 > 0 && row_max[r] != m_new) {  // rescale what earlier key tiles accumulated
            const T alpha = std::exp(row_max[r] - m_new);
            row_sum[r] *= alpha;
            T* __restrict orow = o.data() + r * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) orow[d] *= alpha;
          }
          row_sum[r] += sum;
          row_max[r] = m_new;
        }
        times_rows(rows, j0, cols, sc, kKeyTile, v_all + off, m, D, o.data());
      }
      for (int64_t r = 0; r < rows; ++r) {
        const T l = row_sum[r], inv_l = T(1) / l;
        T* __restrict orow = o.data() + r * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) orow[d] *= inv_l;
        // A +inf score makes the maximum +inf and l NaN: the log-sum-exp is +inf then (as torch.logsumexp).
        lse[r] = row_max[r] == std::numeric_limits<T>::infinity() ? row_max[r] : row_max[r] + std::log(l);
      }
      scatter_rows(o.data(), m, i0, rows, D, out_all + off);
      scatter_rows(lse.data(), m, i0, rows, 1, lse_all + bh * L);
    }
  }
}

// The backward (FlashAttention-2 style): tasks of (slice, chunk of key tiles), so that a batch of
// one or two samples still gives every thread work. A task keeps its key tile's dK and dV in
// thread-local buffers (L2-sized) while it sweeps every query block of the slice, recomputing the
// probabilities from the saved log-sum-exp, and accumulates dQ of the whole slice into its chunk's
// own compact buffer; the chunks' dQ are added in chunk order afterwards, so the result does not
// depend on which thread ran what (deterministic for any thread count and schedule).
template <typename T>
void backward(const AttentionBackward& a) {
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim, BH = s.batch * s.heads, Lp = round_up(L, kPanel);
  const int threads = resolve_threads(a.exec.num_threads);
  const T scale = static_cast<T>(s.scale);
  const T* q_all = static_cast<const T*>(a.q);
  const T* k_all = static_cast<const T*>(a.k);
  const T* v_all = static_cast<const T*>(a.v);
  const T* o_all = static_cast<const T*>(a.out);
  const T* do_all = static_cast<const T*>(a.dout);
  const T* lse_in = static_cast<const T*>(a.lse);
  T* dq_all = static_cast<T*>(a.dq);
  T* dk_all = static_cast<T*>(a.dk);
  T* dv_all = static_cast<T*>(a.dv);
  // Chunks of key tiles per slice: at least ~4 tasks per thread in all (load balance on a busy
  // machine), never more chunks than a slice has key tiles.
  const int64_t chunks = std::max<int64_t>(1, std::min((4 * threads + BH - 1) / BH, (L + kKeyTile - 1) / kKeyTile));
  const int64_t n_tasks = BH * chunks;
  auto kpanels = uninitialised<T>(BH * Lp * D);
  auto vpanels = uninitialised<T>(BH * Lp * D);
  auto lse_c = uninitialised<T>(BH * L), delta_c = uninitialised<T>(BH * L);  // compact per slice
  auto dq_part = uninitialised<T>(BH * chunks * L * D);  // compact dQ of each (slice, chunk)

#pragma omp parallel num_threads(threads)
  {
    share_slices(s, 1, [&](int64_t bh, const SampleMask& m) {
      const int64_t off = bh * L * D, n = m.n_tokens();
      pack_panels(k_all + off, m, D, kpanels.get() + bh * Lp * D);
      pack_panels(v_all + off, m, D, vpanels.get() + bh * Lp * D);
      gather_rows(lse_in + bh * L, m, 0, n, 1, lse_c.get() + bh * L);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t row = m.position(t) * D;
        delta_c[bh * L + t] = dot(do_all + off + row, o_all + off + row, D);
      }
      zero_padding(m, D, dk_all + off);
      zero_padding(m, D, dv_all + off);
    });
    std::vector<T> qb(kQueryRows * D), dob(kQueryRows * D), dk(kKeyTile * D), dv(kKeyTile * D);
    std::vector<T> p(kQueryRows * kKeyTile), ds(kQueryRows * kKeyTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t bh = task / chunks, chunk = task % chunks, off = bh * L * D;
      const SampleMask m = sample_mask(s.mask, bh / s.heads, L);
      const int64_t n = m.n_tokens(), tiles = (n + kKeyTile - 1) / kKeyTile;
      const int64_t j_begin = tiles * chunk / chunks * kKeyTile, j_end = std::min(n, tiles * (chunk + 1) / chunks * kKeyTile);
      T* dq = dq_part.get() + (bh * chunks + chunk) * L * D;
      std::fill(dq, dq + n * D, T(0));
      const T* kp = kpanels.get() + bh * Lp * D;
      const T* vp = vpanels.get() + bh * Lp * D;
      for (int64_t j0 = j_begin; j0 < j_end; j0 += kKeyTile) {
        const int64_t cols = std::min(kKeyTile, j_end - j0);
        std::fill(dk.begin(), dk.begin() + cols * D, T(0));
        std::fill(dv.begin(), dv.begin() + cols * D, T(0));
        for (int64_t i0 = 0; i0 < n; i0 += kQueryRows) {
          const int64_t rows = std::min(kQueryRows, n - i0);
          gather_rows(q_all + off, m, i0, rows, D, qb.data());
          gather_rows(do_all + off, m, i0, rows, D, dob.data());
          scores(rows, cols, D, qb.data(), kp + j0 * D, p.data(), kKeyTile);   // S = Q K^T
          scores(rows, cols, D, dob.data(), vp + j0 * D, ds.data(), kKeyTile);  // dP = dO V^T
          const T* lse = lse_c.get() + bh * L + i0;
          const T* delta = delta_c.get() + bh * L + i0;
          for (int64_t r = 0; r < rows; ++r)  // P = exp(scale S - lse), dS = scale P (dP - delta)
            backward_row(p.data() + r * kKeyTile, ds.data() + r * kKeyTile, cols, scale, lse[r], delta[r]);
          times_rows(rows, j0, cols, ds.data(), kKeyTile, k_all + off, m, D, dq + i0 * D);  // dQ += dS K
          // dV += P^T dO and dK += dS^T Q over this tile's keys (P and dS read transposed).
          product<true, true>(cols, D, rows, p.data(), kKeyTile, dob.data(), D, dv.data(), D);
          product<true, true>(cols, D, rows, ds.data(), kKeyTile, qb.data(), D, dk.data(), D);
        }
        scatter_rows(dk.data(), m, j0, cols, D, dk_all + off);
        scatter_rows(dv.data(), m, j0, cols, D, dv_all + off);
      }
    }
    // dQ = the chunks' sums, in chunk order.
    share_slices(s, 1, [&](int64_t bh, const SampleMask& m) {
      const int64_t off = bh * L * D, n = m.n_tokens();
      T* dq0 = dq_part.get() + bh * chunks * L * D;
      for (int64_t c = 1; c < chunks; ++c) {
        const T* __restrict part = dq0 + c * L * D;
#pragma omp simd
        for (int64_t e = 0; e < n * D; ++e) dq0[e] += part[e];
      }
      scatter_rows(dq0, m, 0, n, D, dq_all + off);
      zero_padding(m, D, dq_all + off);
    });
  }
}

}  // namespace

void tiled_fwd(const AttentionForward& args) {
  dispatch_float(args.problem.dtype, [&](auto type) { forward<typename decltype(type)::type>(args); });
}

void tiled_bwd(const AttentionBackward& args) {
  dispatch_float(args.problem.dtype, [&](auto type) { backward<typename decltype(type)::type>(args); });
}

}  // namespace ZSAR_CPU_ISA
}  // namespace cpu
}  // namespace zsar
