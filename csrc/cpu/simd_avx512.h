// AVX-512F float helpers of the tiled kernels' avx512 variant (tiled_attention.cpp): the 16-lane
// twins of simd_avx2.h's exp8 and lane masks, computing the same values lane for lane (the same
// operations in the same order), so a variant changes only how many lanes run at once.
// Included inside the per-ISA namespace; empty unless the build targets AVX-512F.
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>

namespace zsar {
namespace cpu {
namespace ZSAR_CPU_ISA {
namespace vec16 {

// exp8 (simd_avx2.h) on 16 lanes: x < -87 (incl. -inf) gives exactly 0, x >= ~88.4 (incl. +inf)
// gives +inf, NaN stays NaN (min/max return their second operand when it is NaN).
inline __m512 exp16(__m512 x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
  __m512 v = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), v);
  r = _mm512_fmadd_ps(k, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mov_ps(keep, _mm512_mul_ps(p, _mm512_castsi512_ps(bits)));
}

// scale * s rounded to float, kept from fusing into a following subtraction (see vec8::scaled).
inline __m512 scaled(__m512 s, __m512 scale) {
  __m512 x = _mm512_mul_ps(s, scale);
  __asm__("" : "+v"(x));
  return x;
}

// Lanes j (0..15) of vector `c` of a row with `end` valid entries: set where 16c + j < end.
inline __mmask16 lane_mask(int64_t end, int64_t c) {
  const int64_t left = end - 16 * c;
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (left > 0 ? left : 0)) - 1u);
}

}  // namespace vec16
}  // namespace ZSAR_CPU_ISA
}  // namespace cpu
}  // namespace zsar
#endif  // __AVX512F__
