// pybind11 module zsar._C: the argument structs of csrc/include/zsar/attention.h as Python
// classes (pointers as integers), and one entry point per kernel taking one such struct.
// Python allocates every buffer and validates every argument before calling in here.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/cpu_kernels.h"
#include "cpu/thread_pool.h"
#include "zsar/attention.h"

#ifdef ZSAR_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;
using zsar::AttentionMask;
using zsar::AttentionProblem;
using zsar::AttentionBackward;
using zsar::AttentionForward;
using zsar::MaskKind;
using zsar::ScalarType;

namespace {

template <typename T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

py::dict build_info() {
  py::dict info;
  info["version"] = ZSAR_VERSION;
  info["compiler"] = ZSAR_COMPILER;
  info["cpu_isa"] = zsar::cpu::selected_isa();
  info["cpu_threads"] = zsar::cpu::default_threads();
  info["cpu_threading"] = zsar::cpu::openmp_teams() ? "openmp" : "pool";  // cpu/thread_pool.h
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
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

// A read/write Python property for a pointer member, exposed as an integer address.
template <typename Class, typename Pointer>
void pointer_property(py::class_<Class>& cls, const char* name, Pointer Class::*member) {
  cls.def_property(
      name, [member](const Class& self) { return reinterpret_cast<std::uintptr_t>(self.*member); },
      [member](Class& self, std::uintptr_t address) {
        self.*member = reinterpret_cast<Pointer>(address);
      });
}

// Binds each (name, pointer member) pair of `members` with pointer_property.
template <typename Class>
void pointer_properties(py::class_<Class>&) {}
template <typename Class, typename Pointer, typename... Rest>
void pointer_properties(py::class_<Class>& cls, const char* name, Pointer Class::*member, Rest... rest) {
  pointer_property(cls, name, member);
  pointer_properties(cls, rest...);
}

// An argument struct with the fields every call shares (problem, lengths, execution) filled in.
template <typename Args>
Args make_args(const AttentionProblem& problem, std::uintptr_t lengths, int num_threads, int device,
               std::uintptr_t stream) {
  Args a;
  a.problem = problem;
  a.problem.mask.lengths = ptr<const int32_t>(lengths);
  a.exec.num_threads = num_threads;
  a.exec.device = device;
  a.exec.stream = ptr<void>(stream);
  return a;
}

template <typename Args>
using EntryPoint = void (*)(const Args&);

// Binds the CPU entry point of one argument struct and, in CUDA builds (`cuda` not null), its CUDA
// entry point, which runs with `args.exec.device` current. Both release the GIL: Python owns every
// buffer and keeps it alive for the call.
template <typename Args>
void def_entry_points(py::module_& m, const char* cpu_name, EntryPoint<Args> cpu, const char* cuda_name,
                      EntryPoint<Args> cuda) {
  const auto release = py::call_guard<py::gil_scoped_release>();
  m.def(cpu_name, cpu, py::arg("args"), release);
#ifdef ZSAR_WITH_CUDA
  if (cuda != nullptr) {
    m.def(
        cuda_name,
        [cuda](const Args& args) {
          DeviceGuard guard(args.exec.device);
          cuda(args);
        },
        py::arg("args"), release);
  }
#else
  (void)cuda_name;
  (void)cuda;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "zsar compiled core: C++ (OpenMP or its own thread pool) and CUDA kernels over raw pointers (no libtorch).";
  m.def("build_info", &build_info, "How this extension was built (CUDA, archs, CPU kernels and threads, compiler).");

  py::enum_<ScalarType>(m, "ScalarType")
      .value("float32", ScalarType::Float32)
      .value("float16", ScalarType::Float16)
      .value("bfloat16", ScalarType::BFloat16)
      .value("float64", ScalarType::Float64);
  py::enum_<MaskKind>(m, "MaskKind")
      .value("rest", MaskKind::Rest)
      .value("full", MaskKind::Full)
      .value("bottleneck", MaskKind::Bottleneck);

  // The per-sample lengths are a tensor like q: their address is an argument of each call, so a
  // problem (sizes, dtype, scale, mask kind) can be built once and reused.
  py::class_<AttentionMask> mask(m, "AttentionMask",
                                 "Mask kind and n_fixed; the lengths' address is given with each call.");
  mask.def(py::init([](MaskKind kind, int64_t n_fixed) {
             AttentionMask a;
             a.kind = kind;
             a.n_fixed = n_fixed;
             return a;
           }),
           py::arg("kind"), py::arg("n_fixed"))
      .def_readwrite("kind", &AttentionMask::kind)
      .def_readwrite("n_fixed", &AttentionMask::n_fixed);
  pointer_property(mask, "lengths", &AttentionMask::lengths);

  py::class_<AttentionProblem>(m, "AttentionProblem", "Sizes, dtype, softmax scale and mask of one call.")
      .def(py::init([](int64_t batch, int64_t heads, int64_t seq_len, int64_t head_dim, double scale,
                       ScalarType dtype, const AttentionMask& mask) {
             AttentionProblem p;
             p.batch = batch;
             p.heads = heads;
             p.seq_len = seq_len;
             p.head_dim = head_dim;
             p.scale = scale;
             p.dtype = dtype;
             p.mask = mask;
             return p;
           }),
           py::arg("batch"), py::arg("heads"), py::arg("seq_len"), py::arg("head_dim"), py::arg("scale"),
           py::arg("dtype"), py::arg("mask"))
      .def_readwrite("batch", &AttentionProblem::batch)
      .def_readwrite("heads", &AttentionProblem::heads)
      .def_readwrite("seq_len", &AttentionProblem::seq_len)
      .def_readwrite("head_dim", &AttentionProblem::head_dim)
      .def_readwrite("scale", &AttentionProblem::scale)
      .def_readwrite("dtype", &AttentionProblem::dtype)
      .def_readwrite("mask", &AttentionProblem::mask);

  py::class_<AttentionForward> fwd(m, "AttentionForward",
                                   "Arguments of one forward call (tensor addresses as integers).");
  fwd.def(py::init([](const AttentionProblem& problem, std::uintptr_t lengths, std::uintptr_t q,
                      std::uintptr_t k, std::uintptr_t v, std::uintptr_t out, std::uintptr_t lse, int num_threads,
                      int device, std::uintptr_t stream) {
            auto a = make_args<AttentionForward>(problem, lengths, num_threads, device, stream);
            a.q = ptr<const void>(q);
            a.k = ptr<const void>(k);
            a.v = ptr<const void>(v);
            a.out = ptr<void>(out);
            a.lse = ptr<void>(lse);
            return a;
          }),
          py::arg("problem"), py::arg("lengths"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
          py::arg("lse"), py::arg("num_threads") = 0, py::arg("device") = 0, py::arg("stream") = 0)
      .def_readwrite("problem", &AttentionForward::problem);
  pointer_properties(fwd, "q", &AttentionForward::q, "k", &AttentionForward::k, "v", &AttentionForward::v, "out",
                     &AttentionForward::out, "lse", &AttentionForward::lse);

  py::class_<AttentionBackward> bwd(m, "AttentionBackward",
                                    "Arguments of one backward call (tensor addresses as integers).");
  bwd.def(py::init([](const AttentionProblem& problem, std::uintptr_t lengths, std::uintptr_t q,
                      std::uintptr_t k, std::uintptr_t v, std::uintptr_t out, std::uintptr_t lse,
                      std::uintptr_t dout, std::uintptr_t dq, std::uintptr_t dk, std::uintptr_t dv,
                      std::uintptr_t workspace, int num_threads, int device, std::uintptr_t stream) {
            auto a = make_args<AttentionBackward>(problem, lengths, num_threads, device, stream);
            a.q = ptr<const void>(q);
            a.k = ptr<const void>(k);
            a.v = ptr<const void>(v);
            a.out = ptr<const void>(out);
            a.lse = ptr<const void>(lse);
            a.dout = ptr<const void>(dout);
            a.dq = ptr<void>(dq);
            a.dk = ptr<void>(dk);
            a.dv = ptr<void>(dv);
            a.workspace = ptr<float>(workspace);
            return a;
          }),
          py::arg("problem"), py::arg("lengths"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
          py::arg("lse"), py::arg("dout"), py::arg("dq"), py::arg("dk"), py::arg("dv"),
          py::arg("workspace") = 0, py::arg("num_threads") = 0, py::arg("device") = 0,
          py::arg("stream") = 0)
      .def_readwrite("problem", &AttentionBackward::problem);
  pointer_properties(bwd, "q", &AttentionBackward::q, "k", &AttentionBackward::k, "v", &AttentionBackward::v,
                     "out", &AttentionBackward::out, "lse", &AttentionBackward::lse, "dout",
                     &AttentionBackward::dout, "dq", &AttentionBackward::dq, "dk", &AttentionBackward::dk, "dv",
                     &AttentionBackward::dv, "workspace", &AttentionBackward::workspace);

#ifdef ZSAR_WITH_CUDA
  constexpr auto forward_cuda = &zsar::attention_forward_cuda;
  constexpr auto backward_cuda = &zsar::attention_backward_cuda;
#else
  constexpr EntryPoint<AttentionForward> forward_cuda = nullptr;
  constexpr EntryPoint<AttentionBackward> backward_cuda = nullptr;
#endif
  def_entry_points(m, "attention_forward_cpu", &zsar::attention_forward_cpu, "attention_forward_cuda", forward_cuda);
  def_entry_points(m, "attention_backward_cpu", &zsar::attention_backward_cpu, "attention_backward_cuda",
                   backward_cuda);
}
