// Tensor creation, random numbers, math, shape ops, neural-network ops and autograd.
// Each function is a thin call into ATen; opcodes keep the export table short without a
// string lookup per call.
#include "common.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <exception>
#include <omp.h>
#include <thread>
#include <cstring>
#include <limits>
#include <sstream>

namespace ddpo {

namespace {
// Generators live in a table like tensors: freed slots (generatorFree, called when the JS object
// is disposed or collected) are reused, so sampling one generator per image stays bounded.
std::vector<at::Generator> generators;
std::vector<int32_t> freeGenerators;

at::Generator& generatorAt(const Napi::CallbackInfo& info, size_t i) {
  int32_t h = info[i].As<Napi::Number>().Int32Value();
  if (h < 0 || static_cast<size_t>(h) >= generators.size() || !generators[h].defined()) {
    throw std::invalid_argument("generator handle " + std::to_string(h) + " is not live (freed or never created)");
  }
  return generators[h];
}

// Reduction dims as libtorch numbers them: negative dims counted from the end, checked, and
// sorted high to low so reducing one at a time does not shift the dims still to come.
std::vector<int64_t> descendingDims(const std::vector<int64_t>& dims, int64_t ndim) {
  std::vector<int64_t> out;
  for (int64_t d : dims) {
    int64_t n = d < 0 ? d + ndim : d;
    if (n < 0 || n >= std::max<int64_t>(ndim, 1)) {
      throw std::invalid_argument("dim " + std::to_string(d) + " is out of range for a " + std::to_string(ndim) + "-d tensor");
    }
    if (std::find(out.begin(), out.end(), n) != out.end()) {
      throw std::invalid_argument("dim " + std::to_string(d) + " appears twice");
    }
    out.push_back(n);
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

at::TensorOptions Options(const Napi::CallbackInfo& info, size_t dtypeIndex, size_t deviceIndex) {
  return at::TensorOptions().dtype(Dtype(info, dtypeIndex)).device(Device(info, deviceIndex));
}
}  // namespace

// ---- creation and transfer ------------------------------------------------------------------

// Raw little-endian bytes interpreted as `dtype` (copied), so every dtype, f16/bf16 included,
// crosses without conversion in JavaScript.
DDPO_OP(fromBytes) {
  Napi::TypedArray arr = info[0].As<Napi::TypedArray>();
  std::vector<int64_t> shape = Ints(info, 1);
  at::ScalarType dtype = Dtype(info, 2);
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype));
  size_t expected = out.nbytes();
  if (arr.ByteLength() != expected) {
    std::ostringstream shapeText;
    shapeText << out.sizes();
    throw std::invalid_argument(std::to_string(arr.ByteLength()) + " bytes given, but shape " +
                                shapeText.str() + " of " + c10::toString(dtype) + " needs " +
                                std::to_string(expected));
  }
  const uint8_t* src = static_cast<const uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
  if (expected > 0) std::memcpy(out.data_ptr(), src, expected);
  return Handle(env, out);
}

DDPO_OP(toBytes) {
  at::Tensor t = T(info, 0).detach().to(at::kCPU).contiguous();
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, t.nbytes());
  if (t.nbytes() > 0) std::memcpy(buf.Data(), t.data_ptr(), t.nbytes());
  return buf;
}

DDPO_OP(item) {
  at::Tensor t = T(info, 0);
  if (t.numel() != 1) throw std::invalid_argument("item() needs a tensor of one element");
  return Napi::Number::New(env, t.item<double>());
}

DDPO_OP(shape) {
  const at::Tensor& t = T(info, 0);
  Napi::Array arr = Napi::Array::New(env, t.dim());
  for (int64_t k = 0; k < t.dim(); k++) arr.Set(static_cast<uint32_t>(k), Napi::Number::New(env, static_cast<double>(t.size(k))));
  return arr;
}
DDPO_OP(dtype) { return Napi::Number::New(env, static_cast<int>(T(info, 0).scalar_type())); }
DDPO_OP(device) { return Napi::String::New(env, T(info, 0).device().str()); }
DDPO_OP(full) {
  return Handle(env, at::full(Ints(info, 0), D(info, 1), Options(info, 2, 3)));
}
DDPO_OP(arange) {
  return Handle(env, at::arange(D(info, 0), D(info, 1), D(info, 2), Options(info, 3, 4)));
}
DDPO_OP(linspace) {
  return Handle(env, at::linspace(D(info, 0), D(info, 1), I(info, 2), Options(info, 3, 4)));
}
DDPO_OP(to) {
  const at::Tensor& t = T(info, 0);
  return Handle(env, t.to(Dtype(info, 1)));
}
DDPO_OP(toDevice) { return Handle(env, T(info, 0).to(Device(info, 1))); }
DDPO_OP(clone) { return Handle(env, T(info, 0).clone()); }
DDPO_OP(contiguous) { return Handle(env, T(info, 0).contiguous()); }
DDPO_OP(detach) { return Handle(env, T(info, 0).detach()); }
DDPO_OP(sameTensor) {
  // A new handle to the same tensor (and autograd node): lets TS keep one alive past a scope.
  return Handle(env, T(info, 0));
}

// ---- random numbers (always drawn on the CPU generator, then moved, so a seed gives the same
// numbers on every device, as diffusers recommends) -----------------------------------------

DDPO_OP(generatorNew) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(I(info, 0)));
  int32_t h;
  if (!freeGenerators.empty()) {
    h = freeGenerators.back();
    freeGenerators.pop_back();
    generators[h] = std::move(g);
  } else {
    h = static_cast<int32_t>(generators.size());
    generators.push_back(std::move(g));
  }
  return Napi::Number::New(env, h);
}
DDPO_OP(generatorFree) {
  int32_t h = info[0].As<Napi::Number>().Int32Value();
  if (h >= 0 && static_cast<size_t>(h) < generators.size() && generators[h].defined()) {
    generators[h] = at::Generator();
    freeGenerators.push_back(h);
  }
  return env.Undefined();
}
DDPO_OP(liveGenerators) {
  return Napi::Number::New(env, static_cast<double>(generators.size() - freeGenerators.size()));
}
DDPO_OP(generatorSeed) {
  at::Generator& g = generatorAt(info, 0);
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_current_seed(static_cast<uint64_t>(I(info, 1)));
  return env.Undefined();
}
DDPO_OP(generatorGetState) {
  at::Generator& g = generatorAt(info, 0);
  std::lock_guard<std::mutex> lock(g.mutex());
  at::Tensor state = g.get_state();
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, state.nbytes());
  std::memcpy(buf.Data(), state.data_ptr(), state.nbytes());
  return buf;
}
DDPO_OP(generatorSetState) {
  at::Generator& g = generatorAt(info, 0);
  Napi::ArrayBuffer buf = info[1].As<Napi::ArrayBuffer>();
  at::Tensor state = at::empty({static_cast<int64_t>(buf.ByteLength())}, at::kByte);
  std::memcpy(state.data_ptr(), buf.Data(), buf.ByteLength());
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(state);
  return env.Undefined();
}
DDPO_OP(randn) {
  at::Generator& g = generatorAt(info, 1);
  at::Tensor t = at::randn(Ints(info, 0), g, at::TensorOptions().dtype(at::kFloat));
  return Handle(env, t.to(Device(info, 3), Dtype(info, 2)));
}
DDPO_OP(rand) {
  at::Generator& g = generatorAt(info, 1);
  at::Tensor t = at::rand(Ints(info, 0), g, at::TensorOptions().dtype(at::kFloat));
  return Handle(env, t.to(Device(info, 3), Dtype(info, 2)));
}
DDPO_OP(randint) {
  at::Generator& g = generatorAt(info, 3);
  at::Tensor t = at::randint(I(info, 0), I(info, 1), Ints(info, 2), g, at::TensorOptions().dtype(at::kLong));
  return Handle(env, t.to(Device(info, 4)));
}
DDPO_OP(randperm) {
  at::Generator& g = generatorAt(info, 1);
  return Handle(env, at::randperm(I(info, 0), g, at::TensorOptions().dtype(at::kLong)));
}
// Inverted dropout with our generator: mask ~ Bernoulli(1-p), scaled by 1/(1-p).
DDPO_OP(dropout) {
  const at::Tensor& x = T(info, 0);
  double p = D(info, 1);
  at::Generator& g = generatorAt(info, 2);
  if (p <= 0) return Handle(env, x);
  at::Tensor keep = at::empty(x.sizes(), at::TensorOptions().dtype(at::kFloat)).bernoulli_(1.0 - p, g);
  return Handle(env, x * keep.to(x.device(), x.scalar_type()).div_(1.0 - p));
}

// ---- elementwise math ----------------------------------------------------------------------

enum Unary {
  U_NEG, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_ABS, U_SIN, U_COS, U_TANH, U_SIGMOID, U_RELU, U_SILU,
  U_GELU, U_GELU_TANH, U_LOGSIGMOID, U_SQUARE, U_SIGN, U_FLOOR, U_CEIL, U_ROUND, U_RECIPROCAL,
  U_ERF, U_ISFINITE, U_LOG1P, U_EXPM1, U_LOGICAL_NOT, U_QUICK_GELU
};

static const char* const kUnaryNames[] = {
  "neg", "exp", "log", "sqrt", "rsqrt", "abs", "sin", "cos", "tanh", "sigmoid", "relu", "silu",
  "gelu", "geluTanh", "logSigmoid", "square", "sign", "floor", "ceil", "round", "reciprocal",
  "erf", "isFinite", "log1p", "expm1", "logicalNot", "quickGelu"};

DDPO_OP(unary) {
  int code = static_cast<int>(I(info, 0));
  if (code >= 0 && code <= U_QUICK_GELU) opContext().detail = kUnaryNames[code];
  const at::Tensor& x = T(info, 1);
  at::Tensor y;
  switch (code) {
    case U_NEG: y = at::neg(x); break;
    case U_EXP: y = at::exp(x); break;
    case U_LOG: y = at::log(x); break;
    case U_SQRT: y = at::sqrt(x); break;
    case U_RSQRT: y = at::rsqrt(x); break;
    case U_ABS: y = at::abs(x); break;
    case U_SIN: y = at::sin(x); break;
    case U_COS: y = at::cos(x); break;
    case U_TANH: y = at::tanh(x); break;
    case U_SIGMOID: y = at::sigmoid(x); break;
    case U_RELU: y = at::relu(x); break;
    case U_SILU: y = at::silu(x); break;
    case U_GELU: y = at::gelu(x); break;
    case U_GELU_TANH: y = at::gelu(x, "tanh"); break;
    case U_LOGSIGMOID: y = at::log_sigmoid(x); break;
    case U_SQUARE: y = at::square(x); break;
    case U_SIGN: y = at::sign(x); break;
    case U_FLOOR: y = at::floor(x); break;
    case U_CEIL: y = at::ceil(x); break;
    case U_ROUND: y = at::round(x); break;
    case U_RECIPROCAL: y = at::reciprocal(x); break;
    case U_ERF: y = at::erf(x); break;
    case U_ISFINITE: y = at::isfinite(x); break;
    case U_LOG1P: y = at::log1p(x); break;
    case U_EXPM1: y = at::expm1(x); break;
    case U_LOGICAL_NOT: y = at::logical_not(x); break;
    case U_QUICK_GELU: y = x * at::sigmoid(1.702 * x); break;
    default: throw std::invalid_argument("unknown unary opcode " + std::to_string(code));
  }
  return Handle(env, y);
}

enum Binary {
  B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAXIMUM, B_MINIMUM, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE,
  B_LOGICAL_AND, B_LOGICAL_OR, B_RSUB, B_RDIV, B_RPOW, B_ATAN2, B_REMAINDER
};

static const char* const kBinaryNames[] = {
  "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
  "logicalAnd", "logicalOr", "rsub", "rdiv", "rpow", "atan2", "remainder"};

static at::Tensor binaryOp(int code, const at::Tensor& a, const at::Tensor& b) {
  if (code >= 0 && code <= B_REMAINDER) opContext().detail = kBinaryNames[code];
  switch (code) {
    case B_ADD: return at::add(a, b);
    case B_SUB: return at::sub(a, b);
    case B_MUL: return at::mul(a, b);
    case B_DIV: return at::div(a, b);
    case B_POW: return at::pow(a, b);
    case B_MAXIMUM: return at::maximum(a, b);
    case B_MINIMUM: return at::minimum(a, b);
    case B_EQ: return at::eq(a, b);
    case B_NE: return at::ne(a, b);
    case B_LT: return at::lt(a, b);
    case B_LE: return at::le(a, b);
    case B_GT: return at::gt(a, b);
    case B_GE: return at::ge(a, b);
    case B_LOGICAL_AND: return at::logical_and(a, b);
    case B_LOGICAL_OR: return at::logical_or(a, b);
    case B_RSUB: return at::sub(b, a);
    case B_RDIV: return at::div(b, a);
    case B_RPOW: return at::pow(b, a);
    case B_ATAN2: return at::atan2(a, b);
    case B_REMAINDER: return at::remainder(a, b);
    default: throw std::invalid_argument("unknown binary opcode " + std::to_string(code));
  }
}

DDPO_OP(binary) { return Handle(env, binaryOp(static_cast<int>(I(info, 0)), T(info, 1), T(info, 2))); }

// tensor (op) scalar; scalars stay Python-scalar-like (no dtype promotion of the tensor).
DDPO_OP(binaryScalar) {
  int code = static_cast<int>(I(info, 0));
  if (code >= 0 && code <= B_REMAINDER) opContext().detail = kBinaryNames[code];
  const at::Tensor& a = T(info, 1);
  at::Scalar s(D(info, 2));
  at::Tensor y;
  switch (code) {
    case B_ADD: y = at::add(a, s); break;
    case B_SUB: y = at::sub(a, s); break;
    case B_MUL: y = at::mul(a, s); break;
    case B_DIV: y = at::div(a, s); break;
    case B_POW: y = at::pow(a, s); break;
    case B_MAXIMUM: y = at::clamp_min(a, s); break;
    case B_MINIMUM: y = at::clamp_max(a, s); break;
    case B_EQ: y = at::eq(a, s); break;
    case B_NE: y = at::ne(a, s); break;
    case B_LT: y = at::lt(a, s); break;
    case B_LE: y = at::le(a, s); break;
    case B_GT: y = at::gt(a, s); break;
    case B_GE: y = at::ge(a, s); break;
    case B_RSUB: y = at::rsub(a, s); break;
    case B_RDIV: y = at::mul(at::reciprocal(a), s); break;  // not in place: reciprocal's output is saved for backward
    case B_RPOW: y = at::pow(s, a); break;
    case B_REMAINDER: y = at::remainder(a, s); break;
    default: throw std::invalid_argument("unknown scalar opcode " + std::to_string(code));
  }
  return Handle(env, y);
}

// a + alpha * b in one kernel (optimizers, samplers).
DDPO_OP(addScaled) { return Handle(env, at::add(T(info, 0), T(info, 1), at::Scalar(D(info, 2)))); }
DDPO_OP(where) { return Handle(env, at::where(T(info, 0), T(info, 1), T(info, 2))); }
DDPO_OP(clamp) {
  const at::Tensor& x = T(info, 0);
  c10::optional<at::Scalar> lo, hi;
  if (info[1].IsNumber()) lo = at::Scalar(D(info, 1));
  if (info[2].IsNumber()) hi = at::Scalar(D(info, 2));
  return Handle(env, at::clamp(x, lo, hi));
}
DDPO_OP(lerp) { return Handle(env, at::lerp(T(info, 0), T(info, 1), at::Scalar(D(info, 2)))); }
DDPO_OP(triu) { return Handle(env, at::triu(T(info, 0), I(info, 1))); }

// ---- reductions ----------------------------------------------------------------------------

enum Reduce { R_SUM, R_MEAN, R_AMAX, R_AMIN, R_PROD, R_VAR, R_STD, R_LOGSUMEXP, R_NORM, R_ANY, R_ALL };

static const char* const kReduceNames[] = {
  "sum", "mean", "amax", "amin", "prod", "variance", "std", "logSumExp", "norm", "any", "all"};

DDPO_OP(reduce) {
  int code = static_cast<int>(I(info, 0));
  if (code >= 0 && code <= R_ALL) opContext().detail = kReduceNames[code];
  const at::Tensor& x = T(info, 1);
  bool all = !info[2].IsArray();
  std::vector<int64_t> dims;
  if (all) {
    for (int64_t k = 0; k < x.dim(); k++) dims.push_back(k);
  } else {
    dims = Ints(info, 2);
  }
  bool keep = B(info, 3);
  bool unbiased = info.Length() > 4 && B(info, 4);
  at::Tensor y;
  switch (code) {
    case R_SUM: y = all && !keep ? at::sum(x) : at::sum(x, dims, keep); break;
    case R_MEAN: y = all && !keep ? at::mean(x) : at::mean(x, dims, keep); break;
    case R_AMAX: y = at::amax(x, dims, keep); break;
    case R_AMIN: y = at::amin(x, dims, keep); break;
    case R_PROD: {
      y = x;
      for (int64_t d : descendingDims(dims, x.dim())) y = at::prod(y, d, keep);
      break;
    }
    case R_VAR: y = at::var(x, dims, unbiased, keep); break;
    case R_STD: y = at::std(x, dims, unbiased, keep); break;
    case R_LOGSUMEXP: y = at::logsumexp(x, dims, keep); break;
    case R_NORM: y = at::linalg_vector_norm(x, 2, dims, keep); break;
    case R_ANY: {
      y = x.to(at::kBool);
      for (int64_t d : descendingDims(dims, x.dim())) y = at::any(y, d, keep);
      break;
    }
    case R_ALL: {
      y = x.to(at::kBool);
      for (int64_t d : descendingDims(dims, x.dim())) y = at::all(y, d, keep);
      break;
    }
    default: throw std::invalid_argument("unknown reduction opcode " + std::to_string(code));
  }
  return Handle(env, y);
}
DDPO_OP(argmax) { return Handle(env, at::argmax(T(info, 0), I(info, 1), B(info, 2))); }
DDPO_OP(argmin) { return Handle(env, at::argmin(T(info, 0), I(info, 1), B(info, 2))); }
DDPO_OP(cumsum) { return Handle(env, at::cumsum(T(info, 0), I(info, 1))); }

// ---- shape ---------------------------------------------------------------------------------

DDPO_OP(reshape) { return Handle(env, T(info, 0).reshape(Ints(info, 1))); }
DDPO_OP(permute) { return Handle(env, T(info, 0).permute(Ints(info, 1))); }
DDPO_OP(transpose) { return Handle(env, T(info, 0).transpose(I(info, 1), I(info, 2))); }
DDPO_OP(expand) { return Handle(env, T(info, 0).expand(Ints(info, 1))); }
DDPO_OP(cat) { return Handle(env, at::cat(Tensors(info, 0), I(info, 1))); }
DDPO_OP(stack) { return Handle(env, at::stack(Tensors(info, 0), I(info, 1))); }
DDPO_OP(split) {
  return Handles(env, at::split_with_sizes(T(info, 0), Ints(info, 1), I(info, 2)));
}
DDPO_OP(slice) {
  const at::Tensor& x = T(info, 0);
  return Handle(env, x.slice(I(info, 1), I(info, 2), I(info, 3), I(info, 4)));
}
DDPO_OP(indexSelect) { return Handle(env, at::index_select(T(info, 0), I(info, 1), T(info, 2))); }
DDPO_OP(gather) { return Handle(env, at::gather(T(info, 0), I(info, 1), T(info, 2))); }
DDPO_OP(flip) { return Handle(env, at::flip(T(info, 0), Ints(info, 1))); }
DDPO_OP(repeat) { return Handle(env, T(info, 0).repeat(Ints(info, 1))); }
DDPO_OP(pad) {
  // Constant padding, dims ordered as torch.nn.functional.pad (last dim first).
  return Handle(env, at::constant_pad_nd(T(info, 0), Ints(info, 1), D(info, 2)));
}

// ---- neural-network ops --------------------------------------------------------------------

DDPO_OP(matmul) { return Handle(env, at::matmul(T(info, 0), T(info, 1))); }
DDPO_OP(linear) {
  const at::Tensor& x = T(info, 0);
  const at::Tensor& w = T(info, 1);
  return Handle(env, at::linear(x, w, OptT(info, 2)));
}
DDPO_OP(conv2d) {
  const at::Tensor& x = T(info, 0);
  const at::Tensor& w = T(info, 1);
  c10::optional<at::Tensor> b = OptT(info, 2);
  return Handle(env, at::conv2d(x, w, b, Ints(info, 3), Ints(info, 4), Ints(info, 5), I(info, 6)));
}
DDPO_OP(convTranspose2d) {
  const at::Tensor& x = T(info, 0);
  const at::Tensor& w = T(info, 1);
  c10::optional<at::Tensor> b = OptT(info, 2);
  return Handle(env, at::conv_transpose2d(x, w, b, Ints(info, 3), Ints(info, 4), Ints(info, 5),
                                          I(info, 6), Ints(info, 7)));
}
DDPO_OP(groupNorm) {
  const at::Tensor& x = T(info, 0);
  c10::optional<at::Tensor> w = OptT(info, 2);
  c10::optional<at::Tensor> b = OptT(info, 3);
  return Handle(env, at::group_norm(x, I(info, 1), w, b, D(info, 4), true));
}
DDPO_OP(layerNorm) {
  const at::Tensor& x = T(info, 0);
  c10::optional<at::Tensor> w = OptT(info, 2);
  c10::optional<at::Tensor> b = OptT(info, 3);
  return Handle(env, at::layer_norm(x, Ints(info, 1), w, b, D(info, 4), true));
}
DDPO_OP(softmax) { return Handle(env, at::softmax(T(info, 0), I(info, 1))); }
DDPO_OP(logSoftmax) { return Handle(env, at::log_softmax(T(info, 0), I(info, 1))); }
DDPO_OP(embedding) { return Handle(env, at::embedding(T(info, 0), T(info, 1))); }
DDPO_OP(upsampleNearest2d) {
  return Handle(env, at::upsample_nearest2d(T(info, 0), Ints(info, 1)));
}
DDPO_OP(upsampleBilinear2d) {
  return Handle(env, at::upsample_bilinear2d(T(info, 0), Ints(info, 1), B(info, 2)));
}
DDPO_OP(avgPool2d) {
  return Handle(env, at::avg_pool2d(T(info, 0), Ints(info, 1), Ints(info, 2)));
}

// softmax(q·kᵀ·scale + mask)·v for q, k, v of shape [..., L, D]: the attention used by the UNet's
// transformer blocks and the CLIP text encoder (PyTorch 1.13 has no public fused kernel).
//
// As diffusers' AttnProcessor: contiguous [batch·heads, L, D] operands, bmm with the scale (baddbmm
// with the mask as its addend), softmax, bmm. Handing matmul the callers' transposed 4-D head views
// instead made bmm and the softmax backward take strided paths: profiled on the emoji UNet's DPO
// step, bmm took 8× and softmax backward 23× PyTorch's time for the same calls.
DDPO_OP(attention) {
  const at::Tensor& q = T(info, 0);
  const at::Tensor& k = T(info, 1);
  const at::Tensor& v = T(info, 2);
  c10::optional<at::Tensor> mask = OptT(info, 3);
  double scale = D(info, 4);
  const int64_t lq = q.size(-2), lk = k.size(-2), dv = v.size(-1);
  std::vector<int64_t> lead(q.sizes().begin(), q.sizes().end() - 2);
  int64_t n = 1;
  for (int64_t s : lead) n *= s;
  at::Tensor q3 = q.reshape({n, lq, q.size(-1)}).contiguous();
  at::Tensor k3 = k.reshape({n, lk, k.size(-1)}).contiguous();
  at::Tensor v3 = v.reshape({n, lk, dv}).contiguous();
  at::Tensor scores;
  if (mask.has_value()) {
    std::vector<int64_t> full = lead;
    full.push_back(lq);
    full.push_back(lk);
    at::Tensor m3 = mask->expand(full).reshape({n, lq, lk}).to(q3.scalar_type());
    scores = at::baddbmm(m3, q3, k3.transpose(1, 2), 1.0, scale);
  } else {
    // baddbmm with β = 0 as diffusers, so the scale rides in the GEMM (forward and backward) instead
    // of a separate pass over the scores each way: the emoji UNet's forward + backward went from 893
    // to 803 ms (medians of 5 alternating runs, batch 16, 1 thread). libtorch 1.13 sends products
    // lq·lk·d < 400 to a naive kernel that multiplies the output it is given by β, so an
    // uninitialised one leaks NaNs there (measured: every such shape of a NaN-filled output, and
    // none from 448 up, where BLAS ignores the output at β = 0 as its specification says). Those
    // small outputs are zeroed, the rest left uninitialised: zeroing every one cost 51 ms a step.
    const bool naiveKernel = lq * lk * q.size(-1) < 400;
    scores = (naiveKernel ? at::zeros({n, lq, lk}, q3.options()) : at::empty({n, lq, lk}, q3.options()))
                 .baddbmm_(q3, k3.transpose(1, 2), 0.0, scale);
  }
  at::Tensor out = at::bmm(at::softmax(scores, -1), v3);
  std::vector<int64_t> outShape = lead;
  outShape.push_back(lq);
  outShape.push_back(dv);
  return Handle(env, out.view(outShape));
}

// Squared error averaged over every dimension but the first: the per-sample MSE that the
// Diffusion-DPO loss compares between chosen and rejected images.
DDPO_OP(mseLoss) {
  const at::Tensor& a = T(info, 0);
  const at::Tensor& b = T(info, 1);
  int mode = static_cast<int>(I(info, 2));
  at::Tensor sq = at::square(a - b);
  if (mode == 0) return Handle(env, sq);
  if (mode == 1) return Handle(env, sq.mean());
  std::vector<int64_t> dims;
  for (int64_t k = 1; k < sq.dim(); k++) dims.push_back(k);
  return Handle(env, dims.empty() ? sq : sq.mean(dims));
}

// ---- autograd ------------------------------------------------------------------------------

DDPO_OP(setRequiresGrad) {
  at::Tensor& t = tensorAt(info[0].As<Napi::Number>().Int32Value());
  t.requires_grad_(B(info, 1));
  return env.Undefined();
}
DDPO_OP(requiresGrad) { return Napi::Boolean::New(env, T(info, 0).requires_grad()); }
DDPO_OP(backward) {
  const at::Tensor& t = T(info, 0);
  c10::optional<at::Tensor> grad = OptT(info, 1);
  bool retain = info.Length() > 2 && B(info, 2);
  t.backward(grad.has_value() ? *grad : at::Tensor(), retain, false);
  return env.Undefined();
}
// A backward on a second thread: the loss's graph is backpropagated there while JavaScript goes
// on issuing the ops of independent work (the DPO step's next half-batch), so the two use both
// cores. CPU backward runs on the thread that calls it, so this thread does the work. Its OpenMP
// team size is its own (set after libtorch's lazy per-thread init, which copies the global count).
namespace {
struct BackgroundBackward {
  std::thread thread;
  std::exception_ptr error;
  bool running = false;
};
BackgroundBackward background;
}  // namespace
DDPO_OP(backwardStart) {
  if (background.running) throw std::runtime_error("a background backward is already running; call backwardJoin first");
  at::Tensor t = T(info, 0);
  c10::optional<at::Tensor> grad = OptT(info, 1);
  int threads = static_cast<int>(I(info, 2));
  background.error = nullptr;
  background.running = true;
  background.thread = std::thread([t, grad, threads]() {
    try {
      at::init_num_threads();
      omp_set_num_threads(threads);
      t.backward(grad.has_value() ? *grad : at::Tensor(), false, false);
    } catch (...) {
      background.error = std::current_exception();
    }
  });
  return env.Undefined();
}
DDPO_OP(backwardJoin) {
  if (!background.running) return env.Undefined();
  background.thread.join();
  background.running = false;
  if (background.error) {
    std::exception_ptr e = background.error;
    background.error = nullptr;
    std::rethrow_exception(e);
  }
  return env.Undefined();
}
// OpenMP team size of the calling thread only (at::set_num_threads also changes the global
// count that new threads start from), and OpenBLAS's pool, which is process-wide.
DDPO_OP(setThreadTeam) {
  int n = static_cast<int>(I(info, 0));
  at::init_num_threads();
  omp_set_num_threads(n);
  if (info.Length() > 1 && info[1].IsNumber()) setBlasThreads(static_cast<int>(I(info, 1)));
  return env.Undefined();
}
DDPO_OP(grad) {
  const at::Tensor& t = T(info, 0);
  const at::Tensor& g = t.grad();
  if (!g.defined()) return Napi::Number::New(env, -1);
  return Handle(env, g);
}
DDPO_OP(setGrad) {
  at::Tensor& t = tensorAt(info[0].As<Napi::Number>().Int32Value());
  c10::optional<at::Tensor> g = OptT(info, 1);
  t.mutable_grad() = g.has_value() ? *g : at::Tensor();
  return env.Undefined();
}

// ---- in-place updates (weights, EMA, optimizer state), always outside autograd ---------------

DDPO_OP(copyInto) {
  c10::NoGradGuard noGrad;
  at::Tensor& dst = tensorAt(info[0].As<Napi::Number>().Int32Value());
  dst.copy_(T(info, 1));
  return env.Undefined();
}
DDPO_OP(lerpInto) {
  c10::NoGradGuard noGrad;
  at::Tensor& dst = tensorAt(info[0].As<Napi::Number>().Int32Value());
  dst.lerp_(T(info, 1), at::Scalar(D(info, 2)));
  return env.Undefined();
}
DDPO_OP(addInto) {
  c10::NoGradGuard noGrad;
  at::Tensor& dst = tensorAt(info[0].As<Napi::Number>().Int32Value());
  dst.add_(T(info, 1), at::Scalar(D(info, 2)));
  return env.Undefined();
}
DDPO_OP(mulInto) {
  c10::NoGradGuard noGrad;
  at::Tensor& dst = tensorAt(info[0].As<Napi::Number>().Int32Value());
  dst.mul_(at::Scalar(D(info, 1)));
  return env.Undefined();
}
DDPO_OP(fillInto) {
  c10::NoGradGuard noGrad;
  at::Tensor& dst = tensorAt(info[0].As<Napi::Number>().Int32Value());
  dst.fill_(at::Scalar(D(info, 1)));
  return env.Undefined();
}
DDPO_OP(normalInto) {
  c10::NoGradGuard noGrad;
  at::Tensor& dst = tensorAt(info[0].As<Napi::Number>().Int32Value());
  at::Generator& g = generatorAt(info, 3);
  at::Tensor noise = at::empty(dst.sizes(), at::TensorOptions().dtype(at::kFloat)).normal_(D(info, 1), D(info, 2), g);
  dst.copy_(noise);
  return env.Undefined();
}
DDPO_OP(uniformInto) {
  c10::NoGradGuard noGrad;
  at::Tensor& dst = tensorAt(info[0].As<Napi::Number>().Int32Value());
  at::Generator& g = generatorAt(info, 3);
  at::Tensor noise = at::empty(dst.sizes(), at::TensorOptions().dtype(at::kFloat)).uniform_(D(info, 1), D(info, 2), g);
  dst.copy_(noise);
  return env.Undefined();
}

void registerTensorOps(Napi::Env env, Napi::Object exports) {
#define EXPORT(fn) exports.Set(#fn, Napi::Function::New(env, fn, #fn))
  EXPORT(fromBytes); EXPORT(toBytes); EXPORT(item); EXPORT(shape); EXPORT(dtype); EXPORT(device);
  EXPORT(full); EXPORT(arange); EXPORT(linspace); EXPORT(to); EXPORT(toDevice); EXPORT(clone);
  EXPORT(contiguous); EXPORT(detach); EXPORT(sameTensor);
  EXPORT(generatorNew); EXPORT(generatorFree); EXPORT(liveGenerators); EXPORT(generatorSeed); EXPORT(generatorGetState); EXPORT(generatorSetState);
  EXPORT(randn); EXPORT(rand); EXPORT(randint); EXPORT(randperm); EXPORT(dropout);
  EXPORT(unary); EXPORT(binary); EXPORT(binaryScalar); EXPORT(addScaled); EXPORT(where);
  EXPORT(clamp); EXPORT(lerp); EXPORT(triu);
  EXPORT(reduce); EXPORT(argmax); EXPORT(argmin); EXPORT(cumsum);
  EXPORT(reshape); EXPORT(permute); EXPORT(transpose); EXPORT(expand); EXPORT(cat); EXPORT(stack);
  EXPORT(split); EXPORT(slice); EXPORT(indexSelect); EXPORT(gather); EXPORT(flip); EXPORT(repeat);
  EXPORT(pad);
  EXPORT(matmul); EXPORT(linear); EXPORT(conv2d); EXPORT(convTranspose2d); EXPORT(groupNorm);
  EXPORT(layerNorm); EXPORT(softmax); EXPORT(logSoftmax); EXPORT(embedding);
  EXPORT(upsampleNearest2d); EXPORT(upsampleBilinear2d); EXPORT(avgPool2d); EXPORT(attention);
  EXPORT(mseLoss);
  EXPORT(setRequiresGrad); EXPORT(requiresGrad); EXPORT(backward); EXPORT(backwardStart); EXPORT(backwardJoin); EXPORT(setThreadTeam); EXPORT(grad); EXPORT(setGrad);
  EXPORT(copyInto); EXPORT(lerpInto); EXPORT(addInto); EXPORT(mulInto); EXPORT(fillInto);
  EXPORT(normalInto); EXPORT(uniformInto);
#undef EXPORT
}

}  // namespace ddpo
