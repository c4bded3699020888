// The skeleton shared by the CPU attention kernels (prefix_attention.cpp, tiled_attention.cpp): the
// OpenMP loop over (batch, head) slices and the choice between the float32 AVX2 path and the
// generic float / double path. Included inside each kernel file's per-ISA namespace like simd.h.
#pragma once

#include <cstdint>

#include "simd.h"
#include "zsar/attention.h"

namespace zsar {
namespace cpu {
namespace ZSAR_CPU_ISA {

// Must be called inside an OpenMP parallel region: shares the (batch, head) slices of `s` among the
// team, dynamically in chunks of `chunk` consecutive slices (a slice takes microseconds and a core
// may be busy with something else), and runs body(bh, sample mask) for each. Ends with the
// team's barrier.
template <typename Body>
inline void share_slices(const AttentionProblem& s, int64_t chunk, Body&& body) {
  const int64_t BH = s.batch * s.heads;
#pragma omp for schedule(dynamic, chunk)
  for (int64_t bh = 0; bh < BH; ++bh) body(bh, sample_mask(s.mask, bh / s.heads, s.seq_len));
}

struct NoFinish {
  template <typename Scratch>
  void operator()(Scratch&) const {}
};

// Runs body(bh, sample mask, scratch) for every (batch, head) slice in parallel (share_slices), each
// thread with its own scratch = make_scratch(); finish(scratch) runs on each thread after its last
// slice.
template <typename MakeScratch, typename Body, typename Finish = NoFinish>
void for_each_slice(const AttentionProblem& s, int num_threads, int64_t chunk, MakeScratch&& make_scratch,
                    Body&& body, Finish&& finish = Finish()) {
#pragma omp parallel num_threads(resolve_threads(num_threads))
  {
    auto scratch = make_scratch();
    share_slices(s, chunk, [&](int64_t bh, const SampleMask& m) { body(bh, m, scratch); });
    finish(scratch);
  }
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
