// pybind11 module zsar._C: thin wrappers that take raw pointers (as integers) and sizes.
// Python allocates every buffer and validates every argument before calling in here.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/cpu_kernels.h"
#include "zsar/masked_attention.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef ZSAR_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;
using zsar::MaskedAttentionBwdArgs;
using zsar::MaskedAttentionFwdArgs;
using zsar::MaskedAttentionShape;
using zsar::ScalarType;

namespace {

template <typename T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

MaskedAttentionShape make_shape(int64_t batch, int64_t heads, int64_t seq_len, int64_t head_dim,
                                int64_t n_visual, bool full, double scale) {
  MaskedAttentionShape s;
  s.batch = batch;
  s.heads = heads;
  s.seq_len = seq_len;
  s.head_dim = head_dim;
  s.n_visual = n_visual;
  s.full = full;
  s.scale = scale;
  return s;
}

MaskedAttentionFwdArgs fwd_args(const MaskedAttentionShape& shape, std::uintptr_t q,
                                std::uintptr_t k, std::uintptr_t v, std::uintptr_t n_text,
                                std::uintptr_t out, std::uintptr_t lse) {
  MaskedAttentionFwdArgs a;
  a.shape = shape;
  a.q = ptr<const void>(q);
  a.k = ptr<const void>(k);
  a.v = ptr<const void>(v);
  a.n_text = ptr<const int32_t>(n_text);
  a.out = ptr<void>(out);
  a.lse = ptr<void>(lse);
  return a;
}

MaskedAttentionBwdArgs bwd_args(const MaskedAttentionShape& shape, std::uintptr_t q,
                                std::uintptr_t k, std::uintptr_t v, std::uintptr_t n_text,
                                std::uintptr_t out, std::uintptr_t lse, std::uintptr_t dout,
                                std::uintptr_t dq, std::uintptr_t dk, std::uintptr_t dv,
                                std::uintptr_t delta) {
  MaskedAttentionBwdArgs a;
  a.shape = shape;
  a.q = ptr<const void>(q);
  a.k = ptr<const void>(k);
  a.v = ptr<const void>(v);
  a.n_text = ptr<const int32_t>(n_text);
  a.out = ptr<const void>(out);
  a.lse = ptr<const void>(lse);
  a.dout = ptr<const void>(dout);
  a.dq = ptr<void>(dq);
  a.dk = ptr<void>(dk);
  a.dv = ptr<void>(dv);
  a.delta = ptr<float>(delta);
  return a;
}

py::dict build_info() {
  py::dict info;
  info["version"] = ZSAR_VERSION;
  info["compiler"] = ZSAR_COMPILER;
  info["cpu_isa"] = zsar::cpu::selected_isa();
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_version"] = static_cast<int>(_OPENMP);
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_version"] = py::none();
  info["openmp_max_threads"] = 1;
#endif
#ifdef ZSAR_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = std::string(ZSAR_CUDA_ARCHS);
  info["cuda_runtime_version"] = static_cast<int>(CUDART_VERSION);
#else
  info["cuda"] = false;
  info["cuda_archs"] = py::none();
  info["cuda_runtime_version"] = py::none();
#endif
  return info;
}

#ifdef ZSAR_WITH_CUDA
void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("zsar._C: ") + what + " failed: " + cudaGetErrorString(err));
  }
}

// Makes `device` current for the launch (its primary context is the one torch uses) and restores
// the caller's device afterwards, so torch's notion of the current device is left untouched.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "zsar compiled core: C++/OpenMP and CUDA kernels over raw pointers (no libtorch).";
  m.def("build_info", &build_info, "How this extension was built (CUDA, archs, OpenMP, compiler).");

  const auto release = py::call_guard<py::gil_scoped_release>();

  m.def(
      "masked_attention_fwd_cpu",
      [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t n_text,
         std::uintptr_t out, std::uintptr_t lse, int64_t batch, int64_t heads, int64_t seq_len,
         int64_t head_dim, int64_t n_visual, bool full, double scale, int dtype, int num_threads) {
        const auto shape = make_shape(batch, heads, seq_len, head_dim, n_visual, full, scale);
        zsar::masked_attention_fwd_cpu(fwd_args(shape, q, k, v, n_text, out, lse),
                                       static_cast<ScalarType>(dtype), num_threads);
      },
      release);
  m.def(
      "masked_attention_bwd_cpu",
      [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t n_text,
         std::uintptr_t out, std::uintptr_t lse, std::uintptr_t dout, std::uintptr_t dq,
         std::uintptr_t dk, std::uintptr_t dv, int64_t batch, int64_t heads, int64_t seq_len,
         int64_t head_dim, int64_t n_visual, bool full, double scale, int dtype, int num_threads) {
        const auto shape = make_shape(batch, heads, seq_len, head_dim, n_visual, full, scale);
        zsar::masked_attention_bwd_cpu(
            bwd_args(shape, q, k, v, n_text, out, lse, dout, dq, dk, dv, 0),
            static_cast<ScalarType>(dtype), num_threads);
      },
      release);

#ifdef ZSAR_WITH_CUDA
  m.def(
      "masked_attention_fwd_cuda",
      [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t n_text,
         std::uintptr_t out, std::uintptr_t lse, int64_t batch, int64_t heads, int64_t seq_len,
         int64_t head_dim, int64_t n_visual, bool full, double scale, int dtype, int device,
         std::uintptr_t stream) {
        DeviceGuard guard(device);
        const auto shape = make_shape(batch, heads, seq_len, head_dim, n_visual, full, scale);
        zsar::masked_attention_fwd_cuda(fwd_args(shape, q, k, v, n_text, out, lse),
                                        static_cast<ScalarType>(dtype), ptr<void>(stream));
      },
      release);
  m.def(
      "masked_attention_bwd_cuda",
      [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t n_text,
         std::uintptr_t out, std::uintptr_t lse, std::uintptr_t dout, std::uintptr_t dq,
         std::uintptr_t dk, std::uintptr_t dv, std::uintptr_t delta, int64_t batch, int64_t heads,
         int64_t seq_len, int64_t head_dim, int64_t n_visual, bool full, double scale, int dtype,
         int device, std::uintptr_t stream) {
        DeviceGuard guard(device);
        const auto shape = make_shape(batch, heads, seq_len, head_dim, n_visual, full, scale);
        zsar::masked_attention_bwd_cuda(
            bwd_args(shape, q, k, v, n_text, out, lse, dout, dq, dk, dv, delta),
            static_cast<ScalarType>(dtype), ptr<void>(stream));
      },
      release);
#endif
}
