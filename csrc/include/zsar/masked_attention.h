// Fused masked cross-modal attention (ResT), DESIGN.md §2.1.
//
// The compiled core never sees a torch tensor: Python hands over raw pointers of contiguous
// (B, H, L, Dh) buffers that it allocated, the sizes, and (for CUDA) the current stream.
//
// Mask, per sample b with n_valid = n_visual + n_text[b]: query i attends keys j < key_end(i), where
//   padding query (i >= n_valid)             -> nothing (output row 0, zero gradient)
//   mode full                                -> n_valid
//   mode rest, visual query (i < n_visual)   -> n_visual   (visual tokens never see words)
//   mode rest, word query                    -> i + 1      (all visual tokens + words left of i, itself)
// The allowed keys always form a prefix [0, key_end), which every kernel exploits.
#pragma once

#include <cstdint>

namespace zsar {

enum class ScalarType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

struct MaskedAttentionShape {
  int64_t batch = 0;     // B
  int64_t heads = 0;     // H
  int64_t seq_len = 0;   // L
  int64_t head_dim = 0;  // Dh
  int64_t n_visual = 0;  // CLS + frame tokens, 1 <= n_visual <= L
  bool full = false;     // mode "full" instead of "rest"
  double scale = 1.0;    // softmax scale (double so float64 inputs keep full precision)
};

struct MaskedAttentionFwdArgs {
  MaskedAttentionShape shape;
  const void* q = nullptr;         // (B, H, L, Dh), dtype
  const void* k = nullptr;         // (B, H, L, Dh), dtype
  const void* v = nullptr;         // (B, H, L, Dh), dtype
  const int32_t* n_text = nullptr; // (B,), clamped to [0, L - n_visual] by the kernels
  void* out = nullptr;             // (B, H, L, Dh), dtype; padding rows written as 0
  void* lse = nullptr;             // (B, H, L) log-sum-exp of the scaled scores, 0 on padding rows;
                                   // double for Float64 inputs, float otherwise (see LseType)
};

struct MaskedAttentionBwdArgs {
  MaskedAttentionShape shape;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const int32_t* n_text = nullptr;
  const void* out = nullptr;       // forward output
  const void* lse = nullptr;       // forward log-sum-exp (double for Float64, float otherwise)
  const void* dout = nullptr;      // gradient of out (B, H, L, Dh), dtype
  void* dq = nullptr;              // (B, H, L, Dh), dtype; fully written (zeros where no gradient)
  void* dk = nullptr;
  void* dv = nullptr;
  float* delta = nullptr;          // workspace (B, H, L): rowsum(dout * out); used by the CUDA path
};

// n_text[b] as the kernels use it: clamped to [0, L - n_visual] so a bad value can never index out of
// bounds (Python validates the values in eager mode and reports them).
#if defined(__CUDACC__)
__host__ __device__
#endif
inline int64_t masked_attention_clamp_text(int64_t n_text, int64_t n_visual, int64_t seq_len) {
  const int64_t hi = seq_len - n_visual;
  return n_text < 0 ? 0 : (n_text > hi ? hi : n_text);
}

// Number of keys query `i` of a sample attends to (0 for padding rows). Shared by every backend.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline int64_t masked_attention_key_end(int64_t i, int64_t n_visual, int64_t n_text, bool full) {
  const int64_t n_valid = n_visual + n_text;
  if (i >= n_valid) return 0;
  if (full) return n_valid;
  return i < n_visual ? n_visual : i + 1;
}

// CPU (C++/OpenMP). Float32 and Float64. `num_threads` <= 0 uses the OpenMP default.
void masked_attention_fwd_cpu(const MaskedAttentionFwdArgs& args, ScalarType dtype, int num_threads);
void masked_attention_bwd_cpu(const MaskedAttentionBwdArgs& args, ScalarType dtype, int num_threads);

#ifdef ZSAR_WITH_CUDA
// CUDA. Float32, Float16, BFloat16; head_dim <= 128. Launched on `stream` (a cudaStream_t), no host
// synchronisation and no allocation. Throws std::runtime_error on a launch error.
void masked_attention_fwd_cuda(const MaskedAttentionFwdArgs& args, ScalarType dtype, void* stream);
void masked_attention_bwd_cuda(const MaskedAttentionBwdArgs& args, ScalarType dtype, void* stream);
#endif

}  // namespace zsar
