// CPU kernel variants, one namespace per instruction set (built from the same source).
#pragma once

#include "zsar/masked_attention.h"

namespace zsar {
namespace cpu {

#define ZSAR_DECLARE_CPU_VARIANT(isa)               \
  namespace isa {                                   \
  void fwd(const MaskedAttentionForward& args);     \
  void bwd(const MaskedAttentionBackward& args);    \
  }

ZSAR_DECLARE_CPU_VARIANT(baseline)
ZSAR_DECLARE_CPU_VARIANT(avx2)
#undef ZSAR_DECLARE_CPU_VARIANT

// The variant the running CPU supports best: "avx2" (AVX2 + FMA) or "baseline".
const char* selected_isa();

}  // namespace cpu
}  // namespace zsar
