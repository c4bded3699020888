// Fused masked attention: the argument structs of the compiled core (its ABI) and the mask kinds.
//
// The compiled core never sees a torch tensor: Python hands over one argument struct per call with
// raw pointers of contiguous (B, H, L, Dh) buffers that it allocated, the problem's sizes, a mask
// descriptor and (for CUDA) the device and current stream.
//
// The mask is a kind plus integers (never an L x L tensor). Per sample b, `length` is lengths[b]
// clamped to [0, seq_len - n_fixed], so a bad value can never index out of bounds:
//   Rest (ResT, the default): n_valid = n_fixed + length; n_fixed = CLS + frame tokens, `length` words.
//     visual query (i < n_fixed)     -> keys [0, n_fixed)  (visual tokens never see words)
//     word query (n_fixed <= i < n_valid) -> keys [0, i]    (all visual tokens, words left of i, itself)
//   Full: n_valid = n_fixed + length; every valid query attends every valid key.
//   Bottleneck (MZST's attention-bottleneck fusion): n_fixed = n_fusion in [0, seq_len], `length` =
//     the stream's valid tokens; the valid tokens are [0, length) and the fusion tokens
//     [seq_len - n_fixed, seq_len); every valid query attends every valid key.
// Queries that are not valid are padding: their output rows are 0 and they get no gradient; no
// query attends a padding key. For Rest and Full the keys a query attends form a prefix
// [0, key_end(i)), which their kernels exploit; Bottleneck is served by the tiled kernels, which
// see a sample's valid tokens as one dense block (a prefix and a suffix of the sequence).
//
// A new mask kind is a new MaskKind value (and a case in SampleMask and in each kernel that serves
// it); the argument structs and entry points stay as they are. Kernels reject kinds they do not
// implement with std::invalid_argument.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ZSAR_HOST_DEVICE __host__ __device__
#else
#define ZSAR_HOST_DEVICE
#endif

namespace zsar {

// Values shared with python/zsar/ops/attention/ (SCALAR_TYPE and MaskKind.code there).
enum class ScalarType : int32_t { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };
enum class MaskKind : int32_t { Rest = 0, Full = 1, Bottleneck = 2 };

// Which (query, key) pairs each sample attends (see the top of this file).
struct AttentionMask {
  MaskKind kind = MaskKind::Rest;
  int64_t n_fixed = 0;               // tokens every sample has; Rest/Full: n_visual, in [1, seq_len];
                                     // Bottleneck: n_fusion, in [0, seq_len]
  const int32_t* lengths = nullptr;  // (batch,) on the data's device; Rest/Full: n_text; Bottleneck: n_valid
};

// Sizes, dtype, softmax scale and mask of one call.
struct AttentionProblem {
  int64_t batch = 0;     // B
  int64_t heads = 0;     // H
  int64_t seq_len = 0;   // L
  int64_t head_dim = 0;  // Dh
  double scale = 1.0;    // softmax scale (double so float64 inputs keep full precision)
  ScalarType dtype = ScalarType::Float32;
  AttentionMask mask;
};

// Where a call runs.
struct Execution {
  int num_threads = 0;     // CPU: threads (the caller and zsar's pool helpers); <= 0: the processors the process may use
  int device = 0;          // CUDA: device ordinal
  void* stream = nullptr;  // CUDA: the cudaStream_t to launch on (torch's current stream)
};

struct AttentionForward {
  AttentionProblem problem;
  Execution exec;
  const void* q = nullptr;  // (B, H, L, Dh), dtype
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;  // (B, H, L, Dh), dtype; padding rows written as 0
  void* lse = nullptr;  // (B, H, L) log-sum-exp of the scaled scores, 0 on padding rows;
                        // double for Float64 inputs, float otherwise
};

struct AttentionBackward {
  AttentionProblem problem;
  Execution exec;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;   // forward output
  const void* lse = nullptr;   // forward log-sum-exp (double for Float64, float otherwise)
  const void* dout = nullptr;  // gradient of out (B, H, L, Dh), dtype
  void* dq = nullptr;          // (B, H, L, Dh), dtype; fully written (zeros where no gradient)
  void* dk = nullptr;
  void* dv = nullptr;
  float* workspace = nullptr;  // (B, H, L) floats; the CUDA kernels keep rowsum(dout * out) there
};

// One sample's mask, resolved from the descriptor.
struct SampleMask {
  int64_t n_fixed = 0;
  int64_t n_valid = 0;     // Rest/Full: valid tokens [0, n_valid); Bottleneck: the stream's [0, n_valid)
  int64_t tail_begin = 0;  // Bottleneck: the fusion tokens [tail_begin, seq_len) are valid too; else seq_len
  int64_t seq_len = 0;
  bool full = false;       // every valid query attends every valid key (Full, Bottleneck)

  // Rest/Full only: number of keys query `i` attends (a prefix [0, key_end)); 0 for padding queries.
  ZSAR_HOST_DEVICE int64_t key_end(int64_t i) const {
    if (i >= n_valid) return 0;
    if (full) return n_valid;
    return i < n_fixed ? n_fixed : i + 1;
  }

  // Valid tokens, all kinds: the prefix [0, n_valid) and the tail [tail_begin, seq_len).
  ZSAR_HOST_DEVICE int64_t n_tokens() const { return n_valid + (seq_len - tail_begin); }
  ZSAR_HOST_DEVICE bool valid(int64_t i) const { return i < n_valid || i >= tail_begin; }
  // Position of the t-th valid token (t < n_tokens()).
  ZSAR_HOST_DEVICE int64_t position(int64_t t) const { return t < n_valid ? t : tail_begin + (t - n_valid); }
};

// The mask of sample `b`; `lengths[b]` is clamped to [0, seq_len - n_fixed].
ZSAR_HOST_DEVICE inline SampleMask sample_mask(const AttentionMask& mask, int64_t b, int64_t seq_len) {
  const int64_t hi = seq_len - mask.n_fixed;
  const int64_t length = mask.lengths[b];
  const int64_t clamped = length < 0 ? 0 : (length > hi ? hi : length);
  SampleMask m;
  m.n_fixed = mask.n_fixed;
  m.seq_len = seq_len;
  if (mask.kind == MaskKind::Bottleneck) {
    m.n_valid = clamped;
    m.tail_begin = hi;
    m.full = true;
  } else {
    m.n_valid = mask.n_fixed + clamped;
    m.tail_begin = seq_len;
    m.full = mask.kind == MaskKind::Full;
  }
  return m;
}

// The mask kinds the kernels of this build implement.
inline bool mask_kind_implemented(MaskKind kind) {
  return kind == MaskKind::Rest || kind == MaskKind::Full || kind == MaskKind::Bottleneck;
}

// Smallest n_fixed a kind allows (Rest/Full need the CLS token; Bottleneck may have no fusion tokens).
inline int64_t min_n_fixed(MaskKind kind) { return kind == MaskKind::Bottleneck ? 0 : 1; }

// CPU (C++/OpenMP). Float32 and Float64. Throws std::invalid_argument for invalid arguments.
void attention_forward_cpu(const AttentionForward& args);
void attention_backward_cpu(const AttentionBackward& args);

#ifdef ZSAR_WITH_CUDA
// CUDA. Float32, Float16, BFloat16; head_dim <= 128. Launched on `exec.stream` of `exec.device`,
// no host synchronisation and no allocation. Throws std::runtime_error on a launch error.
void attention_forward_cuda(const AttentionForward& args);
void attention_backward_cuda(const AttentionBackward& args);
#endif

}  // namespace zsar
