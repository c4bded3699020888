// Checks the arguments of the CPU entry points and picks the kernel variant the running processor
// supports best (decided once).
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cpu_kernels.h"

namespace zsar {
namespace cpu {
namespace {

// The variants allowed by ZSAR_CPU_ISA (unset: all): "baseline" < "avx2" < "avx512".
int isa_cap() {
  const char* env = std::getenv("ZSAR_CPU_ISA");
  if (env == nullptr || *env == '\0') return 2;
  const std::string v(env);
  if (v == "baseline") return 0;
  if (v == "avx2") return 1;
  if (v == "avx512") return 2;
  throw std::invalid_argument("ZSAR_CPU_ISA='" + v + "': expected baseline, avx2 or avx512");
}

bool has_avx2_fma() {
#if defined(ZSAR_CPU_HAVE_AVX2)
  return isa_cap() >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool has_avx512() {
#if defined(ZSAR_CPU_HAVE_AVX512)
  return has_avx2_fma() && isa_cap() >= 2 && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw");
#else
  return false;
#endif
}

// Decided on first use (an invalid ZSAR_CPU_ISA then surfaces as the call's error, not as a crash
// while the module loads).
bool use_avx2() {
  static const bool use = has_avx2_fma();
  return use;
}

bool use_avx512() {
  static const bool use = has_avx512();
  return use;
}

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

const char* selected_isa() { return use_avx512() ? "avx512" : use_avx2() ? "avx2" : "baseline"; }

}  // namespace cpu

void attention_forward_cpu(const AttentionForward& args) {
  const void* buffers[] = {args.q, args.k, args.v, args.out, args.lse};
  cpu::check(args.problem, buffers, 5);
#if defined(ZSAR_CPU_HAVE_AVX512)
  if (cpu::use_avx512() && args.problem.mask.kind == MaskKind::Bottleneck) return cpu::avx512::tiled_fwd(args);
#endif
#if defined(ZSAR_CPU_HAVE_AVX2)
  if (cpu::use_avx2()) return cpu::avx2::fwd(args);
#endif
  cpu::baseline::fwd(args);
}

void attention_backward_cpu(const AttentionBackward& args) {
  const void* buffers[] = {args.q, args.k, args.v, args.out, args.lse, args.dout, args.dq, args.dk, args.dv};
  cpu::check(args.problem, buffers, 9);
#if defined(ZSAR_CPU_HAVE_AVX512)
  if (cpu::use_avx512() && args.problem.mask.kind == MaskKind::Bottleneck) return cpu::avx512::tiled_bwd(args);
#endif
#if defined(ZSAR_CPU_HAVE_AVX2)
  if (cpu::use_avx2()) return cpu::avx2::bwd(args);
#endif
  cpu::baseline::bwd(args);
}

}  // namespace zsar
