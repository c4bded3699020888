// The skeleton shared by the CPU attention kernels (prefix_attention.cpp, tiled_attention.cpp): the
// parallel loop over (batch, head) slices and the choice between the float32 AVX2 path and the
// generic float / double path. Included inside each kernel file's per-ISA namespace like simd.h.
#pragma once

#include <algorithm>
#include <cstdint>

#include "simd.h"
#include "thread_pool.h"
#include "zsar/attention.h"

namespace zsar {
namespace cpu {
namespace ZSAR_CPU_ISA {

// Runs body(bh, sample mask, scratch) for every (batch, head) slice in parallel (parallel_items:
// an OpenMP team or the caller and zsar's pool helpers), handed out in chunks of `chunk` consecutive slices (a slice
// takes microseconds and a core may be busy with something else); each thread makes its own
// scratch = make_scratch() before its first chunk.
template <typename MakeScratch, typename Body>
void for_each_slice(const AttentionProblem& s, int num_threads, int64_t chunk, MakeScratch&& make_scratch,
                    Body&& body) {
  const int64_t BH = s.batch * s.heads;
  parallel_items(resolve_threads(num_threads), (BH + chunk - 1) / chunk, make_scratch,
                 [&](int64_t c, auto& scratch) {
                   for (int64_t bh = c * chunk; bh < std::min(BH, (c + 1) * chunk); ++bh)
                     body(bh, sample_mask(s.mask, bh / s.heads, s.seq_len), scratch);
                 });
}

// Whether the float32 AVX2 + FMA kernels (head_dim a multiple of 8) serve `p` in this build.
inline bool fast_path(const AttentionProblem& p) {
#if defined(__AVX2__) && defined(__FMA__)
  return p.dtype == ScalarType::Float32 && p.head_dim % 8 == 0;
#else
  (void)p;
  return false;
#endif
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls generic(TypeTag<T>{}) with T = float for Float32, double for Float64 (the entry points
// reject other dtypes).
template <typename Generic>
void dispatch_float(ScalarType dtype, Generic&& generic) {
  if (dtype == ScalarType::Float32) return generic(TypeTag<float>{});
  generic(TypeTag<double>{});
}

}  // namespace ZSAR_CPU_ISA
}  // namespace cpu
}  // namespace zsar
