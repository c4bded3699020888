// Conversions shared by the CUDA attention kernels (prefix_attention.cu, tiled_attention.cu): every
// kernel computes in float, converting fp16/bf16 on load and rounding once on store.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace zsar {

// scale * s rounded to float, never fused into a following subtraction (__fmul_rn is exempt from
// FMA contraction): the forward takes the row maximum of these products and the backward subtracts
// the saved lse from them, so both must see the same rounded values (with a huge scale, an
// unrounded product could exceed the maximum by half its ulp, and exp would overflow).
__device__ __forceinline__ float scaled(float scale, float s) { return __fmul_rn(scale, s); }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

}  // namespace zsar
