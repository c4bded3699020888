// Tiled CPU kernels of the fused attention for mask kinds whose valid tokens all see each other
// (today: Bottleneck, MZST's attention-bottleneck fusion); kinds and arguments are in
// csrc/include/zsar/masked_attention.h.
//
// Compiled once per instruction set like masked_attention.cpp (whose small-gemm and exp helpers,
// simd.h, these share). One OpenMP task per (batch, head) slice:
//   * the slice's valid tokens (a prefix and a suffix of the sequence) are gathered into compact
//     per-thread buffers, so padding is never read and never computed, and every product is a
//     dense gemm without masking;
//   * forward: blocks of kQueryRows queries; for each, key tiles of kKeyTile keys with an online
//     softmax (running maximum and normaliser, the accumulator rescaled when the maximum grows),
//     so memory stays O(L * Dh) per thread and no L x L matrix (or mask) exists for any L;
//   * backward (FlashAttention-2 style): the probabilities of each (query block, key tile) are
//     recomputed from the saved log-sum-exp, and dQ, dK, dV are accumulated tile by tile.
// Outputs are scattered back, with exact zeros in padding rows (output, lse and gradients).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_kernels.h"
#include "simd.h"

namespace zsar {
namespace cpu {
namespace ZSAR_CPU_ISA {
namespace {

constexpr int64_t kQueryRows = 32;  // queries per block
constexpr int64_t kKeyTile = 256;   // keys per online-softmax step (a multiple of kPad)
constexpr int kTileRows = 6;        // register-tile rows of every product here (see gemm in simd.h)

// The products of these kernels: C (+)= A . B, A optionally transposed (see gemm in simd.h).
template <bool ACC = false, bool TA = false, typename T>
inline void product(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                    int64_t ldc) {
  gemm<ACC, TA, kTileRows>(m, n, k, A, lda, B, ldb, C, ldc);
}

// Per-thread buffers for one slice of up to L tokens with head dim D; every size is O(L * D).
template <typename T>
struct TileScratch {
  int64_t ld;                            // L rounded up to kPad: leading dim of K^T and V^T
  std::vector<T> q, k, v, o, dout;       // (L, D) compact valid rows
  std::vector<T> dq, dk, dv;             // (L, D) compact gradients
  std::vector<T> kt, vt;                 // (D, ld)
  std::vector<T> s, dp;                  // (kQueryRows, kKeyTile) scores / probabilities, dP / dS
  std::vector<T> row_max, row_sum, lse, delta;  // (L,)
  TileScratch(int64_t L, int64_t D, bool backward)
      : ld(round_up(L, kPad)), q(L * D), k(L * D), v(L * D), o(L * D), dout(backward ? L * D : 0),
        dq(backward ? L * D : 0), dk(backward ? L * D : 0), dv(backward ? L * D : 0), kt(D * ld),
        vt(backward ? D * ld : 0), s(kQueryRows * kKeyTile), dp(backward ? kQueryRows * kKeyTile : 0),
        row_max(L), row_sum(L), lse(L), delta(backward ? L : 0) {}
};

// Rows of the slice's valid tokens (prefix [0, n_valid), tail [tail_begin, L)) -> compact rows.
template <typename T>
void gather(const T* src, const SampleMask& m, int64_t D, T* dst) {
  std::memcpy(dst, src, sizeof(T) * m.n_valid * D);
  std::memcpy(dst + m.n_valid * D, src + m.tail_begin * D, sizeof(T) * (m.seq_len - m.tail_begin) * D);
}

// Compact rows -> the slice's valid rows, with exact zeros in the padding rows between.
template <typename T>
void scatter(const T* src, const SampleMask& m, int64_t D, T* dst) {
  std::memcpy(dst, src, sizeof(T) * m.n_valid * D);
  std::fill(dst + m.n_valid * D, dst + m.tail_begin * D, T(0));
  std::memcpy(dst + m.tail_begin * D, src + m.n_valid * D, sizeof(T) * (m.seq_len - m.tail_begin) * D);
}

// Runs body(bh, sample mask, scratch) for every (batch, head) slice, OpenMP-parallel with one
// scratch per thread (dynamic: slices differ in size and a core may be busy).
template <typename T, typename Body>
void for_each_tiled_slice(const AttentionProblem& s, int num_threads, bool backward, Body body) {
  const int64_t BH = s.batch * s.heads;
#pragma omp parallel num_threads(resolve_threads(num_threads))
  {
    TileScratch<T> w(s.seq_len, s.head_dim, backward);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < BH; ++bh) body(bh, sample_mask(s.mask, bh / s.heads, s.seq_len), w);
  }
}

// s[0:rows, 0:cols) *= scale, rounded before any shift (a separate loop, so no fused multiply-add):
// the backward must see exactly the scores whose maximum the forward subtracted.
template <typename T>
inline void scale_scores(T* s, int64_t rows, int64_t cols, int64_t ld, T scale) {
  for (int64_t r = 0; r < rows; ++r) {
    T* __restrict row = s + r * ld;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) row[j] *= scale;
  }
}

template <typename T>
void forward(const MaskedAttentionForward& a) {
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim;
  const T scale = static_cast<T>(s.scale);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for_each_tiled_slice<T>(s, a.exec.num_threads, /*backward=*/false,
                          [&](int64_t bh, const SampleMask& m, TileScratch<T>& w) {
    const int64_t off = bh * L * D, n = m.n_tokens(), ld = w.ld;
    T* out = static_cast<T*>(a.out) + off;
    T* lse = static_cast<T*>(a.lse) + bh * L;
    gather(static_cast<const T*>(a.q) + off, m, D, w.q.data());
    gather(static_cast<const T*>(a.k) + off, m, D, w.k.data());
    gather(static_cast<const T*>(a.v) + off, m, D, w.v.data());
    transpose(w.k.data(), n, D, D, w.kt.data(), ld);

    for (int64_t i0 = 0; i0 < n; i0 += kQueryRows) {
      const int64_t rows = std::min(kQueryRows, n - i0);
      T* o = w.o.data() + i0 * D;
      T* row_max = w.row_max.data() + i0;
      T* row_sum = w.row_sum.data() + i0;
      std::fill(row_max, row_max + rows, kNegInf);
      std::fill(row_sum, row_sum + rows, T(0));
      for (int64_t j0 = 0; j0 < n; j0 += kKeyTile) {
        const int64_t cols = std::min(kKeyTile, n - j0);
        T* st = w.s.data();
        product(rows, round_up(cols, kPad), D, w.q.data() + i0 * D, D, w.kt.data() + j0, ld, st, kKeyTile);
        scale_scores(st, rows, cols, kKeyTile, scale);
        for (int64_t r = 0; r < rows; ++r) {
          T* __restrict p = st + r * kKeyTile;
          T mx = kNegInf;
#pragma omp simd reduction(max : mx)
          for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, p[j]);
          const T m_new = std::max(row_max[r], mx);
          // A row whose scores are all -inf so far keeps m = -inf; shift by 0 (no -inf - -inf).
          const T shift = m_new == kNegInf ? T(0) : m_new;
#pragma omp simd
          for (int64_t j = 0; j < cols; ++j) p[j] -= shift;
          exp_inplace(p, cols);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < cols; ++j) sum += p[j];
          if (j0 > 0) {  // rescale what earlier key tiles accumulated
            const T alpha = std::exp(row_max[r] - shift);
            row_sum[r] *= alpha;
            T* __restrict orow = o + r * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) orow[d] *= alpha;
          }
          row_sum[r] += sum;
          row_max[r] = m_new;
        }
        if (j0 == 0) {
          product<false>(rows, D, cols, st, kKeyTile, w.v.data() + j0 * D, D, o, D);
        } else {
          product<true>(rows, D, cols, st, kKeyTile, w.v.data() + j0 * D, D, o, D);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const T l = row_sum[r], inv_l = T(1) / l;
        T* __restrict orow = o + r * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) orow[d] *= inv_l;
        // A +inf score makes the maximum +inf and l NaN: the log-sum-exp is +inf then (as torch.logsumexp).
        w.lse[i0 + r] = row_max[r] == std::numeric_limits<T>::infinity() ? row_max[r] : row_max[r] + std::log(l);
      }
    }
    scatter(w.o.data(), m, D, out);
    scatter(w.lse.data(), m, 1, lse);
  });
}

template <typename T>
void backward(const MaskedAttentionBackward& a) {
  const auto& s = a.problem;
  const int64_t L = s.seq_len, D = s.head_dim;
  const T scale = static_cast<T>(s.scale);
  for_each_tiled_slice<T>(s, a.exec.num_threads, /*backward=*/true,
                          [&](int64_t bh, const SampleMask& m, TileScratch<T>& w) {
    const int64_t off = bh * L * D, n = m.n_tokens(), ld = w.ld;
    gather(static_cast<const T*>(a.q) + off, m, D, w.q.data());
    gather(static_cast<const T*>(a.k) + off, m, D, w.k.data());
    gather(static_cast<const T*>(a.v) + off, m, D, w.v.data());
    gather(static_cast<const T*>(a.out) + off, m, D, w.o.data());
    gather(static_cast<const T*>(a.dout) + off, m, D, w.dout.data());
    gather(static_cast<const T*>(a.lse) + bh * L, m, 1, w.lse.data());
    transpose(w.k.data(), n, D, D, w.kt.data(), ld);
    transpose(w.v.data(), n, D, D, w.vt.data(), ld);
    for (int64_t t = 0; t < n; ++t) w.delta[t] = dot(w.dout.data() + t * D, w.o.data() + t * D, D);
    std::fill(w.dk.begin(), w.dk.begin() + n * D, T(0));
    std::fill(w.dv.begin(), w.dv.begin() + n * D, T(0));

    for (int64_t i0 = 0; i0 < n; i0 += kQueryRows) {
      const int64_t rows = std::min(kQueryRows, n - i0);
      const T* q = w.q.data() + i0 * D;
      const T* dout = w.dout.data() + i0 * D;
      T* dq = w.dq.data() + i0 * D;
      for (int64_t j0 = 0; j0 < n; j0 += kKeyTile) {
        const int64_t cols = std::min(kKeyTile, n - j0), padded = round_up(cols, kPad);
        T* p = w.s.data();
        T* ds = w.dp.data();
        product(rows, padded, D, q, D, w.kt.data() + j0, ld, p, kKeyTile);       // S = Q K^T
        product(rows, padded, D, dout, D, w.vt.data() + j0, ld, ds, kKeyTile);   // dP = dO V^T
        scale_scores(p, rows, cols, kKeyTile, scale);
        for (int64_t r = 0; r < rows; ++r) {  // P = exp(scale S - lse), dS = scale P (dP - delta)
          T* __restrict pr = p + r * kKeyTile;
          T* __restrict dsr = ds + r * kKeyTile;
          const T shift = w.lse[i0 + r], delta = w.delta[i0 + r];
#pragma omp simd
          for (int64_t j = 0; j < cols; ++j) pr[j] -= shift;
          exp_inplace(pr, cols);
#pragma omp simd
          for (int64_t j = 0; j < cols; ++j) dsr[j] = scale * pr[j] * (dsr[j] - delta);
        }
        // dQ += dS K
        if (j0 == 0) {
          product<false>(rows, D, cols, ds, kKeyTile, w.k.data() + j0 * D, D, dq, D);
        } else {
          product<true>(rows, D, cols, ds, kKeyTile, w.k.data() + j0 * D, D, dq, D);
        }
        // dV += P^T dO and dK += dS^T Q over this tile's keys (P and dS read transposed).
        product<true, true>(cols, D, rows, p, kKeyTile, dout, D, w.dv.data() + j0 * D, D);
        product<true, true>(cols, D, rows, ds, kKeyTile, q, D, w.dk.data() + j0 * D, D);
      }
    }
    scatter(w.dq.data(), m, D, static_cast<T*>(a.dq) + off);
    scatter(w.dk.data(), m, D, static_cast<T*>(a.dk) + off);
    scatter(w.dv.data(), m, D, static_cast<T*>(a.dv) + off);
  });
}

}  // namespace

void tiled_fwd(const MaskedAttentionForward& args) {
  if (args.problem.dtype == ScalarType::Float32) return forward<float>(args);
  forward<double>(args);
}

void tiled_bwd(const MaskedAttentionBackward& args) {
  if (args.problem.dtype == ScalarType::Float32) return backward<float>(args);
  backward<double>(args);
}

}  // namespace ZSAR_CPU_ISA
}  // namespace cpu
}  // namespace zsar
