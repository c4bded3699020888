// Host-side launch helpers shared by the CUDA attention kernels (prefix_attention.cu,
// tiled_attention.cu): the kernels' view of the problem, the dtype dispatch, and a launch that
// checks for launch errors.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "zsar/attention.h"

namespace zsar {

// ceil(a / b) for positive integers, in the wider of their types.
template <typename A, typename B>
__host__ __device__ __forceinline__ constexpr auto cdiv(A a, B b) -> decltype(a + b) {
  return (a + b - 1) / b;
}

// The mask and sizes every kernel reads, narrowed to the kernels' index types (the entry points
// check that seq_len * head_dim fits an int).
struct KernelProblem {
  AttentionMask mask;  // lengths on the device
  int64_t heads;
  int seq_len;
  int head_dim;
  int stride;  // shared-memory row stride in floats
  float scale;
};

inline KernelProblem kernel_problem(const AttentionProblem& s, int64_t stride) {
  KernelProblem p;
  p.mask = s.mask;
  p.heads = s.heads;
  p.seq_len = static_cast<int>(s.seq_len);
  p.head_dim = static_cast<int>(s.head_dim);
  p.stride = static_cast<int>(stride);
  p.scale = static_cast<float>(s.scale);
  return p;
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Grid, block and dynamic shared memory of one launch.
struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t smem = 0;
};

// Throws std::runtime_error naming `kernel` if its launch failed (no host synchronisation: errors
// of the running kernel surface at the caller's next synchronising call).
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("attention (cuda): ") + kernel + " failed: " + cudaGetErrorString(err));
  }
}

// Dynamic shared memory a kernel may use without opting in.
constexpr size_t kDefaultSmemLimit = 48 * 1024;

// Raises the dynamic shared memory limit of `kernel` on the current device to `bytes` (needed above
// 48 KB), once per kernel, device and size. No stream operation: safe under CUDA-graph capture.
inline void allow_smem(const char* name, const void* kernel, size_t bytes) {
  static std::mutex lock;
  static std::map<std::pair<const void*, int>, size_t> allowed;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  std::lock_guard<std::mutex> guard(lock);
  size_t& current = allowed[{kernel, device}];
  if (err == cudaSuccess && bytes > current) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err == cudaSuccess) current = bytes;
  }
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("attention (cuda): ") + name + " cannot use " + std::to_string(bytes) +
                             " bytes of shared memory: " + cudaGetErrorString(err));
  }
}

// Launches `kernel` with `config` on `stream` and checks the launch.
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), const LaunchConfig& config, cudaStream_t stream,
            Args&&... args) {
  if (config.smem > kDefaultSmemLimit) allow_smem(name, reinterpret_cast<const void*>(kernel), config.smem);
  kernel<<<config.grid, config.block, config.smem, stream>>>(std::forward<Args>(args)...);
  check_launch(name);
}

// Whether the tensor-core kernels (mma.cuh) can serve a call: fp16/bf16, rows of whole 16-byte
// chunks (head_dim % 8 == 0), 16-byte aligned buffers (cp.async and uint4 stores), and the
// environment variable ZSAR_CUDA_MMA is "1" (read on every call, so one process can check and time
// both paths). Off by default: these kernels have not yet run on a GPU, so the CUDA-core kernels,
// checked on a GPU against the float64 reference, serve fp16/bf16 until bench/gpu_check.py has
// passed the tensor-core ones there; then the default flips.
template <typename... Ptrs>
bool mma_eligible(const AttentionProblem& s, const Ptrs*... ptrs) {
  const bool half = s.dtype == ScalarType::Float16 || s.dtype == ScalarType::BFloat16;
  const char* env = std::getenv("ZSAR_CUDA_MMA");
  const bool enabled = env != nullptr && std::string(env) == "1";
  return enabled && half && s.head_dim % 8 == 0 && ((reinterpret_cast<uintptr_t>(ptrs) % 16 == 0) && ...);
}

// Calls fn(TypeTag<T>{}, std::integral_constant<int, DP>{}) with the 16-bit element type T of
// `dtype` and the padded head dim DP (32, 64 or 128; head_dim <= 128) that the tensor-core kernels
// are compiled for (mma_eligible calls only).
template <typename Fn>
void dispatch_mma(ScalarType dtype, int64_t head_dim, Fn&& fn) {
  const auto with_dp = [&](auto type) {
    if (head_dim <= 32) return fn(type, std::integral_constant<int, 32>{});
    if (head_dim <= 64) return fn(type, std::integral_constant<int, 64>{});
    return fn(type, std::integral_constant<int, 128>{});
  };
  if (dtype == ScalarType::BFloat16) return with_dp(TypeTag<__nv_bfloat16>{});
  return with_dp(TypeTag<__half>{});
}

// Calls fn(TypeTag<T>{}) with the element type T of `dtype` (float, __half or __nv_bfloat16).
template <typename Fn>
void dispatch_dtype(ScalarType dtype, Fn&& fn) {
  switch (dtype) {
    case ScalarType::Float32: return fn(TypeTag<float>{});
    case ScalarType::Float16: return fn(TypeTag<__half>{});
    case ScalarType::BFloat16: return fn(TypeTag<__nv_bfloat16>{});
    default:
      throw std::invalid_argument("attention (cuda): unsupported dtype " + std::to_string(static_cast<int>(dtype)) +
                                  ", expected float32, float16 or bfloat16");
  }
}

}  // namespace zsar
