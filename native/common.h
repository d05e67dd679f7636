// Shared pieces of the binding: the tensor handle table, argument readers and error wrapping.
// JavaScript holds tensors as small integer handles into this table, so creating a result costs a
// number, not a wrapped object (the per-op overhead measured in ENGINE-NOTES.md).
#pragma once

#include <napi.h>
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace ddpo {

at::Tensor& tensorAt(int32_t handle);
int32_t store(at::Tensor tensor);
void release(int32_t handle);
int64_t liveCount();
// Resizes OpenBLAS's process-wide pool when the BLAS in use is OpenBLAS (binding.cc); else nothing.
void setBlasThreads(int n);
int64_t liveBytes();

// The tensors read by the op in flight, so an error can name their shapes. Each is recorded with
// its argument position: C++ evaluates call arguments in no fixed order (GCC: right to left), so
// the message sorts them back into the order the caller wrote.
struct OpContext {
  std::vector<std::pair<size_t, const at::Tensor*>> inputs;
  const char* detail = nullptr;  // which opcode of a multiplexed op (unary, binary, reduce) failed
};
OpContext& opContext();

inline const at::Tensor& T(const Napi::CallbackInfo& info, size_t i) {
  const at::Tensor& t = tensorAt(info[i].As<Napi::Number>().Int32Value());
  opContext().inputs.emplace_back(i, &t);
  return t;
}

// A handle or -1 for "none" (an optional bias, mask, gradient).
inline c10::optional<at::Tensor> OptT(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) return c10::nullopt;
  int32_t h = info[i].As<Napi::Number>().Int32Value();
  if (h < 0) return c10::nullopt;
  const at::Tensor& t = tensorAt(h);
  opContext().inputs.emplace_back(i, &t);
  return t;
}

inline int64_t I(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Int64Value();
}
inline double D(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().DoubleValue();
}
inline bool B(const Napi::CallbackInfo& info, size_t i) {
  return info[i].ToBoolean().Value();
}
std::vector<int64_t> Ints(const Napi::CallbackInfo& info, size_t i);
std::vector<at::Tensor> Tensors(const Napi::CallbackInfo& info, size_t i);
at::ScalarType Dtype(const Napi::CallbackInfo& info, size_t i);
at::Device Device(const Napi::CallbackInfo& info, size_t i);

inline Napi::Value Handle(Napi::Env env, at::Tensor t) {
  return Napi::Number::New(env, store(std::move(t)));
}
Napi::Value Handles(Napi::Env env, std::vector<at::Tensor> ts);

std::string describeInputs();
// "binary(add)" when a multiplexed op set its detail, else the op's name.
std::string opLabel(const char* name);

// Wraps an op body so libtorch's exceptions become JavaScript errors naming the op and the
// shapes of its inputs; the process never aborts on a bad shape or dtype.
#define DDPO_OP(name)                                                              \
  static Napi::Value name##_impl(const Napi::CallbackInfo& info, Napi::Env env);  \
  Napi::Value name(const Napi::CallbackInfo& info) {                               \
    Napi::Env env = info.Env();                                                    \
    ::ddpo::opContext().inputs.clear();                                            \
    ::ddpo::opContext().detail = nullptr;                                          \
    try {                                                                          \
      return name##_impl(info, env);                                               \
    } catch (const Napi::Error&) {                                                 \
      throw;                                                                       \
    } catch (const c10::Error& e) {                                                \
      throw Napi::Error::New(env, ::ddpo::opLabel(#name) + ": " +                  \
                                      e.what_without_backtrace() +                 \
                                      ::ddpo::describeInputs());                   \
    } catch (const std::exception& e) {                                            \
      throw Napi::Error::New(env, ::ddpo::opLabel(#name) + ": " + e.what() +       \
                                      ::ddpo::describeInputs());                   \
    }                                                                              \
  }                                                                                \
  static Napi::Value name##_impl(const Napi::CallbackInfo& info, Napi::Env env)

void registerTensorOps(Napi::Env env, Napi::Object exports);
void registerOptim(Napi::Env env, Napi::Object exports);
void registerDistributed(Napi::Env env, Napi::Object exports);

}  // namespace ddpo
