// Checks the arguments of the CPU entry points and picks the kernel variant the running processor
// supports best (decided once).
#include <stdexcept>
#include <string>

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

// Python validates every argument first; this is the last line against a crash when the core is
// called directly.
void check(const AttentionProblem& p, const void* const* buffers, int n_buffers) {
  const auto fail = [](const std::string& what) {
    throw std::invalid_argument("attention (cpu): " + what);
  };
  if (p.batch < 1 || p.heads < 1 || p.seq_len < 1 || p.head_dim < 1) fail("batch, heads, seq_len and head_dim must be >= 1");
  if (p.dtype != ScalarType::Float32 && p.dtype != ScalarType::Float64) fail("dtype must be float32 or float64");
  if (!mask_kind_implemented(p.mask.kind)) {
    fail("mask kind " + std::to_string(static_cast<int>(p.mask.kind)) + " is not implemented");
  }
  if (p.mask.n_fixed < min_n_fixed(p.mask.kind) || p.mask.n_fixed > p.seq_len) {
    fail("mask.n_fixed must be in [" + std::to_string(min_n_fixed(p.mask.kind)) + ", seq_len]");
  }
  if (p.mask.lengths == nullptr) fail("mask.lengths is null");
  for (int i = 0; i < n_buffers; ++i) {
    if (buffers[i] == nullptr) fail("a tensor pointer is null");
  }
}

}  // namespace

const char* selected_isa() { return kUseAvx2 ? "avx2" : "baseline"; }

}  // namespace cpu

void attention_forward_cpu(const AttentionForward& args) {
  const void* buffers[] = {args.q, args.k, args.v, args.out, args.lse};
  cpu::check(args.problem, buffers, 5);
#if defined(ZSAR_CPU_HAVE_AVX2)
  if (cpu::kUseAvx2) return cpu::avx2::fwd(args);
#endif
  cpu::baseline::fwd(args);
}

void attention_backward_cpu(const AttentionBackward& args) {
  const void* buffers[] = {args.q, args.k, args.v, args.out, args.lse, args.dout, args.dq, args.dk, args.dv};
  cpu::check(args.problem, buffers, 9);
#if defined(ZSAR_CPU_HAVE_AVX2)
  if (cpu::kUseAvx2) return cpu::avx2::bwd(args);
#endif
  cpu::baseline::bwd(args);
}

}  // namespace zsar
