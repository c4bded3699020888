// CPU kernel variants, one namespace per instruction set (built from the same source).
#pragma once

#include "zsar/attention.h"

namespace zsar {
namespace cpu {

// fwd / bwd: every mask kind (prefix_attention.cpp); tiled_fwd / tiled_bwd: the tiled kernels of
// the kinds where every valid token sees every valid token (tiled_attention.cpp), which fwd / bwd
// hand Bottleneck to.
#define ZSAR_DECLARE_CPU_VARIANT(isa)                 \
  namespace isa {                                     \
  void fwd(const AttentionForward& args);       \
  void bwd(const AttentionBackward& args);      \
  void tiled_fwd(const AttentionForward& args); \
  void tiled_bwd(const AttentionBackward& args); \
  }

ZSAR_DECLARE_CPU_VARIANT(baseline)
ZSAR_DECLARE_CPU_VARIANT(avx2)
ZSAR_DECLARE_CPU_VARIANT(avx512)  // built with tiled_attention.cpp only: tiled_fwd / tiled_bwd
#undef ZSAR_DECLARE_CPU_VARIANT

// The variant the running CPU supports best: "avx512" (AVX-512F: the tiled kernels; the others
// run avx2), "avx2" (AVX2 + FMA) or "baseline". The environment variable ZSAR_CPU_ISA (read once)
// caps it, e.g. ZSAR_CPU_ISA=avx2 runs what an AVX2-only processor runs.
const char* selected_isa();

}  // namespace cpu
}  // namespace zsar
