// Module entry: the handle table, runtime settings (threads, seeds, devices) and memory accounting.
#include "common.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include <dlfcn.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <memory>

#include <algorithm>
#include <sstream>

namespace ddpo {

namespace {
std::vector<at::Tensor> slots;
std::vector<int64_t> slotBytes;
std::vector<int32_t> freeSlots;
int64_t live = 0;
int64_t bytes = 0;
int64_t unreportedBytes = 0;  // reported to V8 in chunks, so small ops do not pay for it
napi_env currentEnv = nullptr;
OpContext context;

void reportExternal(int64_t delta) {
  unreportedBytes += delta;
  if (currentEnv != nullptr && (unreportedBytes > (4 << 20) || unreportedBytes < -(4 << 20))) {
    int64_t adjusted = 0;
    napi_adjust_external_memory(currentEnv, unreportedBytes, &adjusted);
    unreportedBytes = 0;
  }
}
}  // namespace

OpContext& opContext() { return context; }

at::Tensor& tensorAt(int32_t handle) {
  if (handle < 0 || static_cast<size_t>(handle) >= slots.size() || !slots[handle].defined()) {
    throw std::invalid_argument("tensor handle " + std::to_string(handle) +
                                " is not live (the tensor was disposed or never existed)");
  }
  return slots[handle];
}

int32_t store(at::Tensor tensor) {
  int64_t nb = tensor.defined() ? static_cast<int64_t>(tensor.nbytes()) : 0;
  int32_t h;
  if (!freeSlots.empty()) {
    h = freeSlots.back();
    freeSlots.pop_back();
    slots[h] = std::move(tensor);
    slotBytes[h] = nb;
  } else {
    h = static_cast<int32_t>(slots.size());
    slots.push_back(std::move(tensor));
    slotBytes.push_back(nb);
  }
  live++;
  bytes += nb;
  reportExternal(nb);
  return h;
}

void release(int32_t handle) {
  if (handle < 0 || static_cast<size_t>(handle) >= slots.size() || !slots[handle].defined()) return;
  slots[handle].reset();
  bytes -= slotBytes[handle];
  reportExternal(-slotBytes[handle]);
  slotBytes[handle] = 0;
  freeSlots.push_back(handle);
  live--;
}

int64_t liveCount() { return live; }
int64_t liveBytes() { return bytes; }

std::vector<int64_t> Ints(const Napi::CallbackInfo& info, size_t i) {
  Napi::Array arr = info[i].As<Napi::Array>();
  std::vector<int64_t> out(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) out[k] = arr.Get(k).As<Napi::Number>().Int64Value();
  return out;
}

std::vector<at::Tensor> Tensors(const Napi::CallbackInfo& info, size_t i) {
  Napi::Array arr = info[i].As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    const at::Tensor& t = tensorAt(arr.Get(k).As<Napi::Number>().Int32Value());
    context.inputs.emplace_back(i, &t);
    out.push_back(t);
  }
  return out;
}

at::ScalarType Dtype(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    throw std::invalid_argument("argument " + std::to_string(i) + " must be a dtype code (a number)");
  }
  int32_t code = info[i].As<Napi::Number>().Int32Value();
  // The dtypes src/tensor/tensor.ts names (SCALAR_TYPE); any other code would be cast blindly.
  switch (static_cast<at::ScalarType>(code)) {
    case at::kByte: case at::kChar: case at::kShort: case at::kInt: case at::kLong:
    case at::kHalf: case at::kFloat: case at::kDouble: case at::kBool: case at::kBFloat16:
      return static_cast<at::ScalarType>(code);
    default:
      throw std::invalid_argument("unknown dtype code " + std::to_string(code) +
                                  " (expected one of u8 i8 i16 i32 i64 f16 f32 f64 bool bf16)");
  }
}

at::Device Device(const Napi::CallbackInfo& info, size_t i) {
  return at::Device(info[i].As<Napi::String>().Utf8Value());
}

Napi::Value Handles(Napi::Env env, std::vector<at::Tensor> ts) {
  Napi::Array arr = Napi::Array::New(env, ts.size());
  for (size_t k = 0; k < ts.size(); k++) arr.Set(k, Napi::Number::New(env, store(std::move(ts[k]))));
  return arr;
}

std::string opLabel(const char* name) {
  std::string label(name);
  if (context.detail != nullptr) label += std::string("(") + context.detail + ")";
  return label;
}

std::string describeInputs() {
  if (context.inputs.empty()) return "";
  std::vector<std::pair<size_t, const at::Tensor*>> ordered = context.inputs;
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::ostringstream s;
  s << " (inputs:";
  for (const auto& [position, t] : ordered) {
    s << " " << (t->defined() ? t->sizes() : c10::IntArrayRef{}) << ":"
      << (t->defined() ? c10::toString(t->scalar_type()) : "undefined");
  }
  s << ")";
  return s.str();
}

// ---- runtime ------------------------------------------------------------------------------

// libtorch's thread count covers OpenMP (and MKL), not OpenBLAS, which keeps its own pthread pool
// sized to the machine. Its idle workers spin on sched_yield, so a process told to use one thread
// still kept a second core busy (measured: one worker at 93% CPU, mostly system time, beside a
// DDPO_THREADS=1 job). The pool is resized with libtorch's count, found at run time because the
// BLAS behind libblas.so.3 may be another library (then there is nothing to resize).
using BlasSetThreads = void (*)(int);
using BlasGetThreads = int (*)();
void setBlasThreads(int n) {
  static auto set = reinterpret_cast<BlasSetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set != nullptr) set(n);
}
DDPO_OP(setNumThreads) {
  int n = static_cast<int>(I(info, 0));
  at::set_num_threads(n);
  setBlasThreads(n);
  return env.Undefined();
}
DDPO_OP(getNumThreads) { return Napi::Number::New(env, at::get_num_threads()); }
// OpenBLAS's pool size, or -1 when the BLAS in use is not OpenBLAS.
DDPO_OP(getBlasThreads) {
  static auto get = reinterpret_cast<BlasGetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return Napi::Number::New(env, get != nullptr ? get() : -1);
}
// libtorch's (legacy) op profiler: every ATen op between start and stop, forward and backward,
// written as a Chrome trace to the path given at start (scripts/perf/profile-breakdown.ts sums it).
static std::unique_ptr<torch::autograd::profiler::RecordProfile> activeProfile;
DDPO_OP(profileStart) {
  if (activeProfile) throw std::runtime_error("the profiler is already running; call profileStop first");
  activeProfile = std::make_unique<torch::autograd::profiler::RecordProfile>(info[0].As<Napi::String>().Utf8Value());
  return env.Undefined();
}
DDPO_OP(profileStop) {
  if (!activeProfile) throw std::runtime_error("the profiler is not running");
  activeProfile.reset();  // writes the trace
  return env.Undefined();
}
DDPO_OP(hasCuda) { return Napi::Boolean::New(env, at::hasCUDA()); }
DDPO_OP(cudaDeviceCount) {
  return Napi::Number::New(env, at::hasCUDA() ? at::detail::getCUDAHooks().getNumGPUs() : 0);
}
DDPO_OP(manualSeed) {
  at::manual_seed(static_cast<uint64_t>(I(info, 0)));
  return env.Undefined();
}
DDPO_OP(freeTensor) {
  release(info[0].As<Napi::Number>().Int32Value());
  return env.Undefined();
}
DDPO_OP(freeTensors) {
  Napi::Array arr = info[0].As<Napi::Array>();
  for (uint32_t k = 0; k < arr.Length(); k++) release(arr.Get(k).As<Napi::Number>().Int32Value());
  return env.Undefined();
}
DDPO_OP(liveTensors) { return Napi::Number::New(env, static_cast<double>(liveCount())); }
DDPO_OP(liveTensorBytes) { return Napi::Number::New(env, static_cast<double>(liveBytes())); }
// The isolate's external-memory total as V8 sees it (napi_adjust_external_memory by 0 reads it):
// tensor bytes are reported in 4 MiB chunks, so this tracks liveTensorBytes() within that.
DDPO_OP(externalMemory) {
  int64_t total = 0;
  napi_adjust_external_memory(env, 0, &total);
  return Napi::Number::New(env, static_cast<double>(total));
}
DDPO_OP(isGradEnabled) { return Napi::Boolean::New(env, c10::GradMode::is_enabled()); }
DDPO_OP(setGradEnabled) {
  bool previous = c10::GradMode::is_enabled();
  c10::GradMode::set_enabled(B(info, 0));
  return Napi::Boolean::New(env, previous);
}
// Mixed precision on CPU (bf16) or CUDA (f16/bf16): the libtorch autocast switch, scoped from TS.
DDPO_OP(setAutocast) {
  bool enabled = B(info, 0);
  std::string device = info[1].As<Napi::String>().Utf8Value();
  at::ScalarType dtype = Dtype(info, 2);
  bool previous;
  if (device == "cpu") {
    previous = at::autocast::is_cpu_enabled();
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  } else {
    previous = at::autocast::is_enabled();
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  }
  if (!enabled) at::autocast::clear_cache();
  return Napi::Boolean::New(env, previous);
}
// The autocast dtype in force for a device, so a nested autocast() can restore it.
DDPO_OP(getAutocastDtype) {
  std::string device = info[0].As<Napi::String>().Utf8Value();
  at::ScalarType dtype = device == "cpu" ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
  return Napi::Number::New(env, static_cast<int>(dtype));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // The handle tables, the memory accounting and libtorch's grad/autocast modes (thread-local in
  // libtorch) belong to one JavaScript thread. A second thread (a worker) loading the binding would
  // race on them, so it is refused with a plain error; once the owner's environment is torn down
  // (its worker exited) another thread may take over.
  if (currentEnv != nullptr && currentEnv != env) {
    throw Napi::Error::New(env,
        "diffusion-dpo's native binding is already in use by another JavaScript thread; tensors can be "
        "used from one thread per process (the main thread or a single worker). Keep tensor work in one "
        "thread and pass plain data (Uint8Array, numbers) between threads.");
  }
  currentEnv = env;
  napi_add_env_cleanup_hook(env, [](void* arg) {
    if (currentEnv == static_cast<napi_env>(arg)) currentEnv = nullptr;
  }, env);
  // The thread count is chosen in src/tensor/native.ts (DDPO_THREADS, OMP_NUM_THREADS, CPU affinity
  // and cgroup quota), not here.
#define EXPORT(fn) exports.Set(#fn, Napi::Function::New(env, fn, #fn))
  EXPORT(setNumThreads);
  EXPORT(getNumThreads);
  EXPORT(getBlasThreads);
  EXPORT(profileStart);
  EXPORT(profileStop);
  EXPORT(hasCuda);
  EXPORT(cudaDeviceCount);
  EXPORT(manualSeed);
  EXPORT(freeTensor);
  EXPORT(freeTensors);
  EXPORT(liveTensors);
  EXPORT(liveTensorBytes);
  EXPORT(externalMemory);
  EXPORT(isGradEnabled);
  EXPORT(setGradEnabled);
  EXPORT(setAutocast);
  EXPORT(getAutocastDtype);
#undef EXPORT
  registerTensorOps(env, exports);
  registerOptim(env, exports);
  registerDistributed(env, exports);
  return exports;
}

}  // namespace ddpo

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return ddpo::Init(env, exports); }
NODE_API_MODULE(diffusion_dpo, InitModule)
