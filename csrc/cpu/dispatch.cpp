// Picks the CPU kernel variant once, from what the running processor supports.
#include <stdexcept>

#include "cpu_kernels.h"

namespace zsar {
namespace cpu {
namespace {

bool has_avx2_fma() {
#if defined(ZSAR_CPU_HAVE_AVX2)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const bool kUseAvx2 = has_avx2_fma();

void check(const MaskedAttentionShape& s, ScalarType dtype) {
  if (s.batch < 0 || s.heads < 0 || s.seq_len < 1 || s.head_dim < 1 || s.n_visual < 1 ||
      s.n_visual > s.seq_len) {
    throw std::invalid_argument("masked_attention (cpu): invalid shape");
  }
  if (dtype != ScalarType::Float32 && dtype != ScalarType::Float64) {
    throw std::invalid_argument("masked_attention (cpu): dtype must be float32 or float64");
  }
}

}  // namespace

const char* selected_isa() { return kUseAvx2 ? "avx2" : "baseline"; }

}  // namespace cpu

void masked_attention_fwd_cpu(const MaskedAttentionFwdArgs& args, ScalarType dtype, int num_threads) {
  cpu::check(args.shape, dtype);
#if defined(ZSAR_CPU_HAVE_AVX2)
  if (cpu::kUseAvx2) return cpu::avx2::fwd(args, dtype, num_threads);
#endif
  cpu::baseline::fwd(args, dtype, num_threads);
}

void masked_attention_bwd_cpu(const MaskedAttentionBwdArgs& args, ScalarType dtype, int num_threads) {
  cpu::check(args.shape, dtype);
#if defined(ZSAR_CPU_HAVE_AVX2)
  if (cpu::kUseAvx2) return cpu::avx2::bwd(args, dtype, num_threads);
#endif
  cpu::baseline::bwd(args, dtype, num_threads);
}

}  // namespace zsar
