// Tiled CPU kernels of the fused attention for mask kinds whose valid tokens all see each other
// (today: Bottleneck, MZST's attention-bottleneck fusion); kinds and arguments are in
// csrc/include/zsar/attention.h.
//
// Compiled once per instruction set like prefix_attention.cpp (whose register-tiled gemm and exp
// helpers, simd.h, these share). A sample's valid tokens (a prefix and a suffix of the sequence)
// are seen as one dense block of n tokens ("compact" indices t -> position(t)), so padding is never
// read and never computed, and every product is a dense gemm without masking.
//   * forward: one OpenMP task per (batch, head, block of kQueryCols queries), so one or two
//     samples still keep every core busy; per block, key tiles of kKeyTile keys with an online
//     softmax (running maximum and normaliser, the accumulator rescaled when the maximum grows):
//     memory stays O(L * Dh) and no L x L matrix (or mask) exists for any L. Score tiles are
//     computed transposed (see forward()), so K is read in place and nothing is packed per slice.
//   * backward (FlashAttention-2 style): one task per (batch, head, chunk of key tiles), see
//     backward() below; the probabilities of each (query block, key tile) are recomputed from the
//     saved log-sum-exp. K^T and V^T are packed once per (batch, head) slice into panels of kPanel
//     keys, each a contiguous (Dh, kPanel) block, which the score micro-kernel streams from L1
//     while its query rows stay in registers (striding by L through a transposed matrix thrashed
//     one L1 set when L is a multiple of 1024).
//   * the avx512 variant (a build and a processor with AVX-512F) runs the same code with 16-float
//     vectors and 12 x 2 register tiles in the products (kVecBytes) and 16-lane backward rows.
//   * calls below ~4M multiply-adds run on one thread (team_size).
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
// (at most two contiguous runs: the prefix and the fusion tail). With TA, P is stored transposed
// (P^T: one row of ldp per key).
template <bool TA = false, typename T>
void times_rows(int64_t rows, int64_t j0, int64_t cols, const T* p, int64_t ldp, const T* v, const SampleMask& m,
                int64_t D, T* c) {
  const int64_t j1 = j0 + cols;
  if (j0 < m.n_valid) {
    const int64_t e = std::min(j1, m.n_valid);
    product<true, TA>(rows, D, e - j0, p, ldp, v + j0 * D, D, c, D);
  }
  if (j1 > m.n_valid) {
    const int64_t b = std::max(j0, m.n_valid);
    product<true, TA>(rows, D, j1 - b, p + (b - j0) * (TA ? ldp : 1), ldp, v + m.position(b) * D, D, c, D);
  }
}

// C[0:cols, 0:n) = (rows of the keys [j0, j0 + cols), read in place like times_rows) . B[0:D, 0:n).
template <typename T>
void rows_times(int64_t j0, int64_t cols, const T* x, const SampleMask& m, int64_t D, const T* b, int64_t n,
                T* c) {
  const int64_t j1 = j0 + cols;
  if (j0 < m.n_valid) product(std::min(j1, m.n_valid) - j0, n, D, x + j0 * D, D, b, n, c, n);
  if (j1 > m.n_valid) {
    const int64_t first = std::max(j0, m.n_valid);
    product(j1 - first, n, D, x + m.position(first) * D, D, b, n, c + (first - j0) * n, n);
  }
}

// e^x on a vector, the formula of exp_inplace (simd.h) in vector operations (float), so that the
// column-wise softmax below needs no intrinsics; double: std::exp per lane.
template <int BYTES>
inline Vec<float, BYTES> vexp(Vec<float, BYTES> x) {
  using V = Vec<float, BYTES>;
  typedef int32_t VI __attribute__((vector_size(BYTES)));
  const V c89 = V{} + 89.0f, cm87 = V{} + -87.0f, magic = V{} + 12582912.0f, zero = V{};
  const V hi = x > c89 ? c89 : x;
  const V v = hi < cm87 ? cm87 : hi;
  const V k = (v * 1.44269504088896341f + magic) - magic;  // round to nearest
  const V r = (v - k * 0.693359375f) + k * 2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V poly = x < cm87 ? zero : p * r * r + r + 1.0f;  // underflow (and -inf) to exactly 0
  const VI bits = (__builtin_convertvector(v == v ? k : zero, VI) + 127) << 23;  // NaN: 2^0
  return poly * (V)bits;  // a vector cast reinterprets the bits
}

template <int BYTES>
inline Vec<double, BYTES> vexp(Vec<double, BYTES> x) {
  for (int64_t l = 0; l < kWidth<double, BYTES>; ++l) x[l] = std::exp(x[l]);
  return x;
}

// Buffers that are allocated once per call and left uninitialised (every element read is written
// first): a std::vector would zero hundreds of MB for nothing.
template <typename T>
std::unique_ptr<T[]> uninitialised(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// Threads for a call of ~`work` multiply-adds: one below ~4M (a few hundred microseconds or less:
// waking and joining a team costs more than it saves, and far more when a team member is
// descheduled on a busy machine), else the caller's setting.
inline int team_size(double work, int num_threads) {
  return work < 4.0e6 ? 1 : resolve_threads(num_threads);
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
// The float rows of the avx512 variant: the AVX2 rows below on 16 lanes (the same values per lane).
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
// The float rows in 8-lane vectors, one pass instead of four loops; the same values as the
// generic rows (exp8 is exp_inplace's polynomial). Score tiles are
// computed for whole 16-key panels, so whole vectors up to round_up(cols, 8) are readable; lanes
// past cols are masked to -inf (exp gives 0).
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

// The forward computes each score tile transposed, S^T = K . Q^T (keys x queries): K is read in
// place (no packed panels, so no pass over the slice before the tasks and one parallel loop per
// call), Q^T is packed once per task, and the online softmax runs down the key rows with one vector
// lane per query (running maximum and sum in registers, no horizontal reductions, no lane masks).
// O += P . V then reads P^T transposed. Queries per task: kQueryCols (whole vectors).
constexpr int64_t kQueryCols = 64;

template <typename T>
void forward(const AttentionForward& a) {
  using V = Vec<T, kVecBytes>;
  constexpr int64_t W = kWidth<T, kVecBytes>, NQ = kQueryCols / W;
  static_assert(kQueryCols % kWidth<double, kVecBytes> == 0, "query blocks are whole vectors");
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim, BH = s.batch * s.heads;
  const T scale = static_cast<T>(s.scale);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity(), kInf = std::numeric_limits<T>::infinity();
  const T* q_all = static_cast<const T*>(a.q);
  const T* k_all = static_cast<const T*>(a.k);
  const T* v_all = static_cast<const T*>(a.v);
  T* out_all = static_cast<T*>(a.out);
  T* lse_all = static_cast<T*>(a.lse);

  // Tasks: (slice, first query) for every block of every slice, slices in order.
  std::vector<std::pair<int64_t, int64_t>> tasks;
  double pairs = 0;
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t n = sample_mask(s.mask, bh / s.heads, L).n_tokens();
    pairs += static_cast<double>(n) * static_cast<double>(n);
    tasks.emplace_back(bh, 0);  // also for a slice without valid tokens: its padding is zeroed
    for (int64_t i0 = kQueryCols; i0 < n; i0 += kQueryCols) tasks.emplace_back(bh, i0);
  }
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());

#pragma omp parallel num_threads(team_size(pairs * static_cast<double>(D), a.exec.num_threads))
  {
    std::vector<T> qb(kQueryCols * D), qt(D * kQueryCols), o(kQueryCols * D), st(kKeyTile * kQueryCols);
    alignas(64) T row_max[kQueryCols], row_sum[kQueryCols], alpha[kQueryCols];
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t bh = tasks[task].first, i0 = tasks[task].second;
      const SampleMask m = sample_mask(s.mask, bh / s.heads, L);
      const int64_t n = m.n_tokens(), rows = std::min(kQueryCols, n - i0), off = bh * L * D;
      if (i0 == 0) {  // the padding rows of the slice, once
        zero_padding(m, D, out_all + off);
        zero_padding(m, 1, lse_all + bh * L);
        if (n == 0) continue;
      }
      gather_rows(q_all + off, m, i0, rows, D, qb.data());
      std::fill(qt.begin(), qt.end(), T(0));  // queries past `rows` score 0: finite, never read
      transpose(qb.data(), rows, D, D, qt.data(), kQueryCols);
      std::fill(o.begin(), o.begin() + rows * D, T(0));
      V mx[NQ], sum[NQ];
      for (int64_t v = 0; v < NQ; ++v) mx[v] = V{} + kNegInf, sum[v] = V{};
      for (int64_t j0 = 0; j0 < n; j0 += kKeyTile) {
        const int64_t cols = std::min(kKeyTile, n - j0);
        T* __restrict sc = st.data();
        rows_times(j0, cols, k_all + off, m, D, qt.data(), kQueryCols, sc);  // S^T = K Q^T
        // Scores scaled and rounded (stored) before any shift, as the backward sees them; the
        // new running maximum per query ignores NaN (a NaN still reaches the output via exp).
        V tile_max[NQ];
        for (int64_t v = 0; v < NQ; ++v) tile_max[v] = mx[v];
        for (int64_t c = 0; c < cols; ++c)
          for (int64_t v = 0; v < NQ; ++v) {
            const V x = loadu<kVecBytes>(sc + c * kQueryCols + v * W) * scale;
            storeu<kVecBytes>(sc + c * kQueryCols + v * W, x);
            tile_max[v] = x > tile_max[v] ? x : tile_max[v];
          }
        V shift[NQ];
        bool grew = false;
        for (int64_t v = 0; v < NQ; ++v) {
          // alpha = e^(old max - new max) rescales what earlier tiles summed (1 where the maximum
          // stayed, including -inf -> -inf).
          const V al = mx[v] == tile_max[v] ? V{} + T(1) : vexp<kVecBytes>(mx[v] - tile_max[v]);
          storeu<kVecBytes>(alpha + v * W, al);
          sum[v] *= al;
          for (int64_t l = 0; l < W; ++l) grew |= al[l] != T(1);
          mx[v] = tile_max[v];
          shift[v] = mx[v] == kNegInf ? V{} : mx[v];
        }
        for (int64_t c = 0; c < cols; ++c)
          for (int64_t v = 0; v < NQ; ++v) {
            const V e = vexp<kVecBytes>(loadu<kVecBytes>(sc + c * kQueryCols + v * W) - shift[v]);
            storeu<kVecBytes>(sc + c * kQueryCols + v * W, e);
            sum[v] += e;
          }
        if (j0 > 0 && grew) {
          for (int64_t r = 0; r < rows; ++r) {
            const T al = alpha[r];
            T* __restrict orow = o.data() + r * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) orow[d] *= al;
          }
        }
        times_rows<true>(rows, j0, cols, sc, kQueryCols, v_all + off, m, D, o.data());  // O += P V
      }
      for (int64_t v = 0; v < NQ; ++v) storeu<kVecBytes>(row_max + v * W, mx[v]), storeu<kVecBytes>(row_sum + v * W, sum[v]);
      T lse[kQueryCols];
      for (int64_t r = 0; r < rows; ++r) {
        const T l = row_sum[r], inv_l = T(1) / l;
        T* __restrict orow = o.data() + r * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) orow[d] *= inv_l;
        // A +inf score makes the maximum +inf and l NaN: the log-sum-exp is +inf then (as torch.logsumexp).
        lse[r] = row_max[r] == kInf ? row_max[r] : row_max[r] + std::log(l);
      }
      scatter_rows(o.data(), m, i0, rows, D, out_all + off);
      scatter_rows(lse, m, i0, rows, 1, lse_all + bh * L);
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
  double pairs = 0;
  for (int64_t b = 0; b < s.batch; ++b) {
    const double n = static_cast<double>(sample_mask(s.mask, b, L).n_tokens());
    pairs += n * n * static_cast<double>(s.heads);
  }
  const int threads = team_size(2.5 * pairs * static_cast<double>(D), a.exec.num_threads);
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
