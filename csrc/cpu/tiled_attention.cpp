// Tiled CPU kernels of the fused attention for mask kinds whose valid tokens all see each other
// (today: Bottleneck, MZST's attention-bottleneck fusion); kinds and arguments are in
// csrc/include/zsar/attention.h.
//
// Compiled once per instruction set like prefix_attention.cpp (whose register-tiled gemm and exp
// helpers, simd.h, these share). A sample's valid tokens (a prefix and a suffix of the sequence)
// are seen as one dense block of n tokens ("compact" indices t -> position(t)), so padding is never
// read and never computed, and every product is a dense gemm without masking.
//   * forward: one task per (batch, head, block of kQueryCols queries), so one or two
//     samples still keep every core busy; per block, key tiles of kKeyTile keys with an online
//     softmax (running maximum and normaliser, the accumulator rescaled when the maximum grows):
//     memory stays O(L * Dh) and no L x L matrix (or mask) exists for any L. Score tiles are
//     computed transposed (see forward()), so K is read in place and nothing is packed per slice;
//     the score product's epilogue scales the scores and updates the running maxima in registers
//     (score_tile), and a slice's short last block computes only its queries rounded up to a vector
//     pair.
//   * backward (FlashAttention-2 style): one task per (batch, head, chunk of key tiles), see
//     backward() below; the probabilities of each (query block, key tile) are recomputed from the
//     saved log-sum-exp. K^T and V^T are packed once per (batch, head) slice into panels of kPanel
//     keys, each a contiguous (Dh, kPanel) block, which the score micro-kernel streams from L1
//     while its query rows stay in registers (striding by L through a transposed matrix thrashed
//     one L1 set when L is a multiple of 1024). One register tile computes S and dP and, in its
//     epilogues, P and dS (grad_tile): no pass over the tiles of its own.
//   * the avx512 variant (a build and a processor with AVX-512F) runs the same code with 16-float
//     vectors and 12 x 2 register tiles (kVecBytes, kTileRows); every variant computes the same
//     formulas in the same order per lane.
//   * tasks are shared by an OpenMP team or by the caller and zsar's pool helpers (parallel_items,
//     thread_pool.h); calls below ~250k multiply-adds run on the caller alone (team_size).
// Outputs are scattered back, with exact zeros in padding rows (output, lse and gradients).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_kernels.h"
#include "simd.h"
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

// Packs the slice's valid rows (compact order) as K^T panels: panel t0 / kPanel holds, at
// [d * kPanel + j], element d of valid token t0 + j (zero past the last token).
template <typename T>
void pack_panels(const T* src, const SampleMask& m, int64_t D, T* dst) {
  const int64_t n = m.n_tokens();
  for (int64_t t0 = 0; t0 < n; t0 += kPanel) {
    T* __restrict panel = dst + t0 * D;
    const int64_t cnt = std::min(kPanel, n - t0);
    transpose_rows(cnt, D, [&](int64_t j) { return src + m.position(t0 + j) * D; }, panel, kPanel);
    if (cnt < kPanel)
      for (int64_t d = 0; d < D; ++d) std::fill(panel + d * kPanel + cnt, panel + (d + 1) * kPanel, T(0));
  }
}

// Valid rows [t0, t0 + rows) (compact indices) of a slice -> dst rows 0..rows.
template <typename T>
void gather_rows(const T* src, const SampleMask& m, int64_t t0, int64_t rows, int64_t D, T* dst) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * D, src + m.position(t0 + r) * D, sizeof(T) * D);
}

// The valid rows [t0, t0 + rows) of a slice as `rows` consecutive rows of length D: in place when
// they are one run (all in the prefix or all in the fusion tail: every block but the one that
// straddles the two), else gathered into dst.
template <typename T>
const T* rows_of(const T* src, const SampleMask& m, int64_t t0, int64_t rows, int64_t D, T* dst) {
  if (rows > 0 && m.position(t0 + rows - 1) - m.position(t0) == rows - 1) return src + m.position(t0) * D;
  gather_rows(src, m, t0, rows, D, dst);
  return dst;
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

// Threads for a call of ~`work` multiply-adds: the caller alone below 250k (~10 us of work, about
// what waking a helper and sharing the tasks costs), else the caller's setting. Measured on 2 cores
// (bench/RESULTS.md): with the caller alone up to 4M, L=64 B=4 H=4 calls took 1.3x as long.
inline int team_size(double work, int num_threads) {
  return work < 2.5e5 ? 1 : resolve_threads(num_threads);
}

// The forward computes each score tile transposed, S^T = K . Q^T (keys x queries): K is read in
// place (no packed panels, so no pass over the slice before the tasks and one parallel loop per
// call), Q^T is packed once per task, and the online softmax runs down the key rows with one vector
// lane per query (running maximum and sum in registers, no horizontal reductions, no lane masks).
// O += P . V then reads P^T transposed. Queries per task: kQueryCols (whole vectors).
constexpr int64_t kQueryCols = 64;

// The forward's packed queries: the valid rows [i0, i0 + rows) (compact) of a slice, transposed
// straight from their positions into qt (D x kQueryCols; no gathered copy first). Columns
// [rows, cols) are zeroed: the padded lanes of the vectors the score tiles compute score 0 (finite,
// never read); columns from cols on are not read.
template <typename T>
void pack_queries(const T* q, const SampleMask& m, int64_t i0, int64_t rows, int64_t D, int64_t cols, T* qt) {
  transpose_rows(rows, D, [&](int64_t r) { return q + m.position(i0 + r) * D; }, qt, kQueryCols);
  if (rows < cols)
    for (int64_t d = 0; d < D; ++d) std::fill(qt + d * kQueryCols + rows, qt + d * kQueryCols + cols, T(0));
}

// acc0/acc1[r] += A[r, :] . B[:, 0:W) / B[:, W:2W) for rows r < MR: the register-tile product of
// the fused kernels below, whose epilogues work on the accumulators in registers. A: MR rows of
// length D (row stride D); B: D rows of two vectors (row stride ldb).
template <int MR, typename T>
__attribute__((always_inline)) inline void tile_product(int64_t D, const T* __restrict a, const T* __restrict b,
                                                         int64_t ldb, Vec<T, kVecBytes>* __restrict acc0,
                                                         Vec<T, kVecBytes>* __restrict acc1) {
  using V = Vec<T, kVecBytes>;
  constexpr int64_t W = kWidth<T, kVecBytes>;
  for (int64_t d = 0; d < D; ++d) {
    const V b0 = loadu<kVecBytes>(b + d * ldb), b1 = loadu<kVecBytes>(b + d * ldb + W);
    for (int r = 0; r < MR; ++r) {
      const T x = a[r * D + d];
      acc0[r] += x * b0;
      acc1[r] += x * b1;
    }
  }
}

// One register tile of the forward's transposed scores: rows [0, MR) of a run of keys (K rows read
// in place, row stride D) against the first nv vectors of packed queries qt (D x kQueryCols; nv
// even, the block's queries rounded up to pairs of vectors):
// s[r, :] = scale * (K[r, :] . Q^T), stored (the scores the backward recomputes: rounded once, then
// scaled and rounded), and the per-query running maxima tmax (one vector lane per query, NaN
// ignored) updated from the registers. Fusing the scale and the maximum into the product's epilogue
// saves a pass over the tile, and the inlined tile keeps the D-long (short) inner product free of
// call overhead.
template <int MR, typename T>
__attribute__((always_inline)) inline void score_tile(int64_t D, const T* __restrict k, const T* __restrict qt,
                                                       int64_t nv, T scale, T* __restrict s,
                                                       Vec<T, kVecBytes>* __restrict tmax) {
  using V = Vec<T, kVecBytes>;
  constexpr int64_t W = kWidth<T, kVecBytes>;
  static_assert(kQueryCols / W % 2 == 0, "query blocks are pairs of vectors");
  for (int64_t v0 = 0; v0 < nv; v0 += 2) {
    V acc0[MR], acc1[MR];
    for (int r = 0; r < MR; ++r) acc0[r] = V{}, acc1[r] = V{};
    tile_product<MR>(D, k, qt + v0 * W, kQueryCols, acc0, acc1);
    V m0 = tmax[v0], m1 = tmax[v0 + 1];
    for (int r = 0; r < MR; ++r) {
      const V x0 = acc0[r] * scale, x1 = acc1[r] * scale;
      storeu<kVecBytes>(s + r * kQueryCols + v0 * W, x0);
      storeu<kVecBytes>(s + r * kQueryCols + v0 * W + W, x1);
      m0 = x0 > m0 ? x0 : m0;
      m1 = x1 > m1 ? x1 : m1;
    }
    tmax[v0] = m0, tmax[v0 + 1] = m1;
  }
}

// The last rows < R of a run, as one tile of exactly that many rows.
template <int R, typename T>
inline void score_last_rows(int64_t rows, int64_t D, const T* k, const T* qt, int64_t nv, T scale, T* s,
                            Vec<T, kVecBytes>* tmax) {
  if constexpr (R > 1) {
    if (rows == R - 1) return score_tile<R - 1>(D, k, qt, nv, scale, s, tmax);
    score_last_rows<R - 1>(rows, D, k, qt, nv, scale, s, tmax);
  }
}

// Scores of the keys [j0, j0 + cols) (compact; at most two runs of rows in place: the prefix and
// the fusion tail) against the packed queries, into rows 0..cols of s (kQueryCols per row).
template <typename T>
void score_rows(int64_t j0, int64_t cols, const T* k, const SampleMask& m, int64_t D, const T* qt, int64_t nv,
                T scale, T* s, Vec<T, kVecBytes>* tmax) {
  const auto run = [&](int64_t first, int64_t count, T* out) {
    const T* rows = k + m.position(first) * D;
    int64_t r = 0;
    for (; r + kTileRows <= count; r += kTileRows)
      score_tile<kTileRows>(D, rows + r * D, qt, nv, scale, out + r * kQueryCols, tmax);
    if (r < count) score_last_rows<kTileRows>(count - r, D, rows + r * D, qt, nv, scale, out + r * kQueryCols, tmax);
  };
  const int64_t j1 = j0 + cols;
  if (j0 < m.n_valid) run(j0, std::min(j1, m.n_valid) - j0, s);
  if (j1 > m.n_valid) {
    const int64_t first = std::max(j0, m.n_valid);
    run(first, j1 - first, s + (first - j0) * kQueryCols);
  }
}

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

  struct Scratch {  // packed queries, the output block, a score tile (each element read is written first)
    std::unique_ptr<T[]> qt, o, st;
  };
  parallel_items(
      team_size(pairs * static_cast<double>(D), a.exec.num_threads), n_tasks,
      [&] {
        return Scratch{uninitialised<T>(D * kQueryCols), uninitialised<T>(kQueryCols * D),
                       uninitialised<T>(kKeyTile * kQueryCols)};
      },
      [&](int64_t task, Scratch& w) {
      T *qt = w.qt.get(), *o = w.o.get(), *st = w.st.get();
      alignas(64) T row_max[kQueryCols], row_sum[kQueryCols], alpha[kQueryCols];
      const int64_t bh = tasks[task].first, i0 = tasks[task].second;
      const SampleMask m = sample_mask(s.mask, bh / s.heads, L);
      const int64_t n = m.n_tokens(), rows = std::min(kQueryCols, n - i0), off = bh * L * D;
      if (i0 == 0) {  // the padding rows of the slice, once
        zero_padding(m, D, out_all + off);
        zero_padding(m, 1, lse_all + bh * L);
        if (n == 0) return;
      }
      // Vectors of queries computed: the block's rows rounded up to a pair (a short last block of
      // a slice does not pay for kQueryCols).
      const int64_t nv = std::min(NQ, round_up(rows, 2 * W) / W);
      pack_queries(q_all + off, m, i0, rows, D, nv * W, qt);
      std::fill(o, o + rows * D, T(0));
      V mx[NQ], sum[NQ];
      for (int64_t v = 0; v < NQ; ++v) mx[v] = V{} + kNegInf, sum[v] = V{};
      for (int64_t j0 = 0; j0 < n; j0 += kKeyTile) {
        const int64_t cols = std::min(kKeyTile, n - j0);
        T* __restrict sc = st;
        // S^T = scale K Q^T, and the new running maximum per query (NaN ignored: a NaN still
        // reaches the output via exp).
        V tile_max[NQ];
        for (int64_t v = 0; v < NQ; ++v) tile_max[v] = mx[v];
        score_rows(j0, cols, k_all + off, m, D, qt, nv, scale, sc, tile_max);
        V shift[NQ];
        bool grew = false;
        for (int64_t v = 0; v < nv; ++v) {
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
          for (int64_t v = 0; v < nv; ++v) {
            const V e = vexp<kVecBytes>(loadu<kVecBytes>(sc + c * kQueryCols + v * W) - shift[v]);
            storeu<kVecBytes>(sc + c * kQueryCols + v * W, e);
            sum[v] += e;
          }
        if (j0 > 0 && grew) {
          for (int64_t r = 0; r < rows; ++r) {
            const T al = alpha[r];
            T* __restrict orow = o + r * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) orow[d] *= al;
          }
        }
        times_rows<true>(rows, j0, cols, sc, kQueryCols, v_all + off, m, D, o);  // O += P V
      }
      for (int64_t v = 0; v < NQ; ++v) storeu<kVecBytes>(row_max + v * W, mx[v]), storeu<kVecBytes>(row_sum + v * W, sum[v]);
      // O / l and the log-sum-exp, written straight to the slice's rows (the normalisation is the
      // scatter's pass).
      for (int64_t r = 0; r < rows; ++r) {
        const T l = row_sum[r], inv_l = T(1) / l;
        const int64_t pos = m.position(i0 + r);
        const T* __restrict orow = o + r * D;
        T* __restrict dst = out_all + off + pos * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) dst[d] = orow[d] * inv_l;
        // A +inf score makes the maximum +inf and l NaN: the log-sum-exp is +inf then (as torch.logsumexp).
        lse_all[bh * L + pos] = row_max[r] == kInf ? row_max[r] : row_max[r] + std::log(l);
      }
      });
}

// x rounded to T as a value in a register, so that a following subtraction cannot fuse with the
// product that made it (an FMA would skip the rounding): the backward's scaled scores must be the
// forward's stored ones. The baseline variant has no FMA to fuse into.
template <typename V>
__attribute__((always_inline)) inline V rounded(V x) {
#if defined(__AVX512F__)
  __asm__("" : "+v"(x));
#elif defined(__AVX__)
  __asm__("" : "+x"(x));
#endif
  return x;
}

// x as a value the compiler cannot know before this point, so nothing computed from it is hoisted
// above (into or out of an enclosing loop). The register tiles below use it for what their
// epilogues need: hoisted, the lane masks and the scale stayed in vector registers through the
// products' loops, and AVX2's 16 registers did not hold them beside 12 accumulators (two
// accumulators lived on the stack, a store-load round trip in their FMA chains).
template <typename X>
__attribute__((always_inline)) inline X opaque(X x) {
  if constexpr (std::is_floating_point_v<X>) {
#if defined(__SSE2__)
    __asm__ volatile("" : "+x"(x));
#else
    __asm__ volatile("" : "+g"(x));
#endif
  } else {
    __asm__ volatile("" : "+r"(x));
  }
  return x;
}

// One register tile of the backward's probabilities and score gradients: query rows [0, MR) of a
// block (q and dout rows, row stride D; see rows_of) x two vectors of keys (2W) of one packed K^T / V^T
// panel (kpanel, vpanel: the panels plus the tile's first column), of which the first `keys` are
// valid:
//   P = exp(scale (Q K^T) - lse),  dS = scale P (dO V^T - delta),
// both zero past the valid keys; stored in p and ds (row stride ld). The products and the
// elementwise step share the tile (no pass over p and ds of their own, no call per product).
template <int MR, typename T>
__attribute__((always_inline)) inline void grad_tile(int64_t D, const T* __restrict q, const T* __restrict dout,
                                                      const T* __restrict kpanel, const T* __restrict vpanel,
                                                      int64_t keys, T scale, const T* __restrict lse,
                                                      const T* __restrict delta, T* __restrict p,
                                                      T* __restrict ds, int64_t ld) {
  using V = Vec<T, kVecBytes>;
  constexpr int64_t W = kWidth<T, kVecBytes>;
  static_assert(kPanel % (2 * W) == 0, "a panel is whole pairs of vectors");
  V acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) acc0[r] = V{}, acc1[r] = V{};
  tile_product<MR>(D, q, kpanel, kPanel, acc0, acc1);  // S = Q K^T
  {
    const T sc = opaque(scale), n_keys = static_cast<T>(opaque(keys));
    V lane;
    for (int64_t l = 0; l < W; ++l) lane[l] = static_cast<T>(l);
    const auto valid0 = lane < n_keys, valid1 = lane + static_cast<T>(W) < n_keys;
    for (int r = 0; r < MR; ++r) {
      const V e0 = vexp<kVecBytes>(rounded(acc0[r] * sc) - lse[r]);
      const V e1 = vexp<kVecBytes>(rounded(acc1[r] * sc) - lse[r]);
      storeu<kVecBytes>(p + r * ld, valid0 ? e0 : V{});
      storeu<kVecBytes>(p + r * ld + W, valid1 ? e1 : V{});
      acc0[r] = V{}, acc1[r] = V{};
    }
  }
  tile_product<MR>(D, dout, vpanel, kPanel, acc0, acc1);  // dP = dO V^T
  const T sc = opaque(scale);
  for (int r = 0; r < MR; ++r) {
    const V p0 = loadu<kVecBytes>(p + r * ld), p1 = loadu<kVecBytes>(p + r * ld + W);
    storeu<kVecBytes>(ds + r * ld, p0 * sc * (acc0[r] - delta[r]));
    storeu<kVecBytes>(ds + r * ld + W, p1 * sc * (acc1[r] - delta[r]));
  }
}

template <int R, typename T>
inline void grad_last_rows(int64_t rows, int64_t D, const T* q, const T* dout, const T* kpanel, const T* vpanel,
                           int64_t keys, T scale, const T* lse, const T* delta, T* p, T* ds, int64_t ld) {
  if constexpr (R > 1) {
    if (rows == R - 1) return grad_tile<R - 1>(D, q, dout, kpanel, vpanel, keys, scale, lse, delta, p, ds, ld);
    grad_last_rows<R - 1>(rows, D, q, dout, kpanel, vpanel, keys, scale, lse, delta, p, ds, ld);
  }
}

// P and dS (see grad_tile) of `rows` consecutive query rows x the keys [0, cols) of the packed panels,
// into p and ds (row stride ld; whole vector pairs are written, zero past cols). Column tile by
// column tile, so its part of the two panels stays in L1 while the rows stream.
template <typename T>
void grad_scores(int64_t rows, int64_t cols, int64_t D, const T* q, const T* dout, const T* kpanels,
                 const T* vpanels, T scale, const T* lse, const T* delta, T* p, T* ds, int64_t ld) {
  constexpr int64_t kPair = 2 * kWidth<T, kVecBytes>;  // keys per tile: the whole panel for float
  for (int64_t c = 0; c < round_up(cols, kPair); c += kPair) {
    const int64_t keys = std::min(kPair, cols - c);
    const T* kp = kpanels + c / kPanel * kPanel * D + c % kPanel;
    const T* vp = vpanels + c / kPanel * kPanel * D + c % kPanel;
    int64_t r = 0;
    for (; r + kTileRows <= rows; r += kTileRows)
      grad_tile<kTileRows>(D, q + r * D, dout + r * D, kp, vp, keys, scale, lse + r, delta + r, p + r * ld + c,
                           ds + r * ld + c, ld);
    if (r < rows)
      grad_last_rows<kTileRows>(rows - r, D, q + r * D, dout + r * D, kp, vp, keys, scale, lse + r, delta + r,
                                p + r * ld + c, ds + r * ld + c, ld);
  }
}

// The backward (FlashAttention-2 style): tasks of (slice, chunk of key tiles), so that a batch of
// one or two samples still gives every thread work. A task keeps its key tile's dK and dV in
// thread-local buffers (L2-sized) while it sweeps every query block of the slice, recomputing the
// probabilities from the saved log-sum-exp, and accumulates dQ of the whole slice into its chunk's
// own compact buffer; the chunks' dQ are added in chunk order afterwards, so the result does not
// depend on which thread ran what (deterministic for any thread count and schedule).
// With one chunk per slice (enough slices for every thread: most calls) a task is a whole slice,
// from packing its panels to writing dQ, in one parallel loop over the thread's own buffers: its
// panels are read while still in cache, and no B x H x L x Dh buffer is allocated per call (the
// three passes over such buffers put a fifth of a B=8 H=12 L=64 Dh=64 backward profile in page faults,
// memset and memmove). Both ways run the same sweep in the same order: the results are identical.
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

  // What a slice's tasks read besides q and dO: its K^T / V^T panels, its log-sum-exp and
  // delta = rowsum(dO * O) (compact); the padding rows of dK and dV are zeroed on the way.
  const auto prepare = [&](int64_t bh, const SampleMask& m, T* kp, T* vp, T* lse_c, T* delta_c) {
    const int64_t off = bh * L * D, n = m.n_tokens();
    pack_panels(k_all + off, m, D, kp);
    pack_panels(v_all + off, m, D, vp);
    gather_rows(lse_in + bh * L, m, 0, n, 1, lse_c);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = m.position(t) * D;
      delta_c[t] = dot(do_all + off + row, o_all + off + row, D);
    }
    zero_padding(m, D, dk_all + off);
    zero_padding(m, D, dv_all + off);
  };
  // A task's tile buffers: gathered q / dO rows, dK / dV of one key tile, P and dS (every element
  // read is written first, so they are not initialised).
  struct Tiles {
    std::unique_ptr<T[]> qb, dob, dk, dv, p, ds;
  };
  const auto make_tiles = [&] {
    return Tiles{uninitialised<T>(kQueryRows * D), uninitialised<T>(kQueryRows * D), uninitialised<T>(kKeyTile * D),
                 uninitialised<T>(kKeyTile * D),   uninitialised<T>(kQueryRows * kKeyTile),
                 uninitialised<T>(kQueryRows * kKeyTile)};
  };
  // dK and dV of the slice's keys [j_begin, j_end) (compact), written to their rows, and their part
  // of dQ, written to dq (compact, the slice's n rows).
  const auto sweep = [&](int64_t bh, const SampleMask& m, int64_t j_begin, int64_t j_end, const T* kp, const T* vp,
                         const T* lse_c, const T* delta_c, T* dq, Tiles& w) {
    const int64_t off = bh * L * D, n = m.n_tokens();
    T *dk = w.dk.get(), *dv = w.dv.get(), *p = w.p.get(), *ds = w.ds.get();
    std::fill(dq, dq + n * D, T(0));
    for (int64_t j0 = j_begin; j0 < j_end; j0 += kKeyTile) {
      const int64_t cols = std::min(kKeyTile, j_end - j0);
      std::fill(dk, dk + cols * D, T(0));
      std::fill(dv, dv + cols * D, T(0));
      for (int64_t i0 = 0; i0 < n; i0 += kQueryRows) {
        const int64_t rows = std::min(kQueryRows, n - i0);
        const T* qr = rows_of(q_all + off, m, i0, rows, D, w.qb.get());
        const T* dor = rows_of(do_all + off, m, i0, rows, D, w.dob.get());
        grad_scores(rows, cols, D, qr, dor, kp + j0 * D, vp + j0 * D, scale, lse_c + i0, delta_c + i0, p, ds,
                    kKeyTile);
        times_rows(rows, j0, cols, ds, kKeyTile, k_all + off, m, D, dq + i0 * D);  // dQ += dS K
        // dV += P^T dO and dK += dS^T Q over this tile's keys (P and dS read transposed).
        product<true, true>(cols, D, rows, p, kKeyTile, dor, D, dv, D);
        product<true, true>(cols, D, rows, ds, kKeyTile, qr, D, dk, D);
      }
      scatter_rows(dk, m, j0, cols, D, dk_all + off);
      scatter_rows(dv, m, j0, cols, D, dv_all + off);
    }
  };
  // dQ of a slice from its compact sum.
  const auto write_dq = [&](int64_t bh, const SampleMask& m, const T* dq) {
    scatter_rows(dq, m, 0, m.n_tokens(), D, dq_all + bh * L * D);
    zero_padding(m, D, dq_all + bh * L * D);
  };

  if (chunks == 1) {
    struct Slice {
      Tiles tiles;
      std::unique_ptr<T[]> kp, vp, lse, delta, dq;
    };
    parallel_items(
        threads, BH,
        [&] {
          return Slice{make_tiles(), uninitialised<T>(Lp * D), uninitialised<T>(Lp * D), uninitialised<T>(L),
                       uninitialised<T>(L), uninitialised<T>(L * D)};
        },
        [&](int64_t bh, Slice& w) {
          const SampleMask m = sample_mask(s.mask, bh / s.heads, L);
          prepare(bh, m, w.kp.get(), w.vp.get(), w.lse.get(), w.delta.get());
          sweep(bh, m, 0, m.n_tokens(), w.kp.get(), w.vp.get(), w.lse.get(), w.delta.get(), w.dq.get(), w.tiles);
          write_dq(bh, m, w.dq.get());
        });
    return;
  }

  auto kpanels = uninitialised<T>(BH * Lp * D);
  auto vpanels = uninitialised<T>(BH * Lp * D);
  auto lse_c = uninitialised<T>(BH * L), delta_c = uninitialised<T>(BH * L);  // compact per slice
  auto dq_part = uninitialised<T>(BH * chunks * L * D);  // compact dQ of each (slice, chunk)
  struct NoScratch {};
  const auto no_scratch = [] { return NoScratch{}; };
  for_each_slice(s, threads, 1, no_scratch, [&](int64_t bh, const SampleMask& m, NoScratch&) {
    prepare(bh, m, kpanels.get() + bh * Lp * D, vpanels.get() + bh * Lp * D, lse_c.get() + bh * L,
            delta_c.get() + bh * L);
  });
  parallel_items(threads, BH * chunks, make_tiles, [&](int64_t task, Tiles& w) {
    const int64_t bh = task / chunks, chunk = task % chunks;
    const SampleMask m = sample_mask(s.mask, bh / s.heads, L);
    const int64_t n = m.n_tokens(), tiles = (n + kKeyTile - 1) / kKeyTile;
    const int64_t j_begin = tiles * chunk / chunks * kKeyTile, j_end = std::min(n, tiles * (chunk + 1) / chunks * kKeyTile);
    sweep(bh, m, j_begin, j_end, kpanels.get() + bh * Lp * D, vpanels.get() + bh * Lp * D, lse_c.get() + bh * L,
          delta_c.get() + bh * L, dq_part.get() + (bh * chunks + chunk) * L * D, w);
  });
  // dQ = the chunks' sums, in chunk order.
  for_each_slice(s, threads, 1, no_scratch, [&](int64_t bh, const SampleMask& m, NoScratch&) {
    const int64_t n = m.n_tokens();
    T* dq0 = dq_part.get() + bh * chunks * L * D;
    for (int64_t c = 1; c < chunks; ++c) {
      const T* __restrict part = dq0 + c * L * D;
#pragma omp simd
      for (int64_t e = 0; e < n * D; ++e) dq0[e] += part[e];
    }
    write_dq(bh, m, dq0);
  });
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
