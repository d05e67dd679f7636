// Optimizer steps and gradient clipping, one native call per parameter (or per parameter list),
// following PyTorch 1.13's single-tensor AdamW and transformers' Adafactor operation by operation
// so results match them to float rounding.
#include "common.h"

#include <c10/core/GradMode.h>

#include <cmath>

namespace ddpo {

// AdamW(param, expAvg, expAvgSq, step, lr, beta1, beta2, eps, weightDecay); skips a parameter
// without a gradient, like torch.optim.
DDPO_OP(adamwStep) {
  c10::NoGradGuard noGrad;
  at::Tensor& param = tensorAt(info[0].As<Napi::Number>().Int32Value());
  at::Tensor& expAvg = tensorAt(info[1].As<Napi::Number>().Int32Value());
  at::Tensor& expAvgSq = tensorAt(info[2].As<Napi::Number>().Int32Value());
  opContext().inputs = {{0, &param}, {1, &expAvg}, {2, &expAvgSq}};
  double step = D(info, 3), lr = D(info, 4), beta1 = D(info, 5), beta2 = D(info, 6);
  double eps = D(info, 7), weightDecay = D(info, 8);
  const at::Tensor& grad = param.grad();
  if (!grad.defined()) return Napi::Boolean::New(env, false);
  param.mul_(1 - lr * weightDecay);
  expAvg.lerp_(grad, 1 - beta1);
  expAvgSq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  double biasCorrection1 = 1 - std::pow(beta1, step);
  double biasCorrection2 = 1 - std::pow(beta2, step);
  double stepSize = lr / biasCorrection1;
  at::Tensor denom = (expAvgSq.sqrt() / std::sqrt(biasCorrection2)).add_(eps);
  param.addcdiv_(expAvg, denom, -stepSize);
  return Napi::Boolean::New(env, true);
}

// Adafactor as in transformers with scale_parameter=False, relative_step=False,
// warmup_init=False (the SDXL recipe): factored second moments for matrices, update clipping by
// RMS, optional first moment (expAvg handle or -1). For tensors of rank >= 2, stateA/stateB are
// the row and column statistics; otherwise stateA is the full second moment.
// adafactorStep(param, stateA, stateB, expAvg, step, lr, eps1, clipThreshold, decayRate, beta1, wd)
DDPO_OP(adafactorStep) {
  c10::NoGradGuard noGrad;
  at::Tensor& param = tensorAt(info[0].As<Napi::Number>().Int32Value());
  const at::Tensor& grad0 = param.grad();
  if (!grad0.defined()) return Napi::Boolean::New(env, false);
  at::Tensor grad = grad0.to(at::kFloat);
  bool factored = param.dim() >= 2;
  at::Tensor& stateA = tensorAt(info[1].As<Napi::Number>().Int32Value());
  double step = D(info, 4), lr = D(info, 5), eps1 = D(info, 6), clipThreshold = D(info, 7);
  double decayRate = D(info, 8), beta1 = D(info, 9), weightDecay = D(info, 10);
  double beta2t = 1.0 - std::pow(step, decayRate);
  at::Tensor update = grad.square() + eps1;
  if (factored) {
    at::Tensor& stateB = tensorAt(info[2].As<Napi::Number>().Int32Value());
    stateA.mul_(beta2t).add_(update.mean(-1), 1.0 - beta2t);
    stateB.mul_(beta2t).add_(update.mean(-2), 1.0 - beta2t);
    at::Tensor rFactor = (stateA / stateA.mean(-1, true)).rsqrt_().unsqueeze(-1);
    at::Tensor cFactor = stateB.unsqueeze(-2).rsqrt();
    update = at::mul(rFactor, cFactor).mul_(grad);
  } else {
    stateA.mul_(beta2t).add_(update, 1.0 - beta2t);
    update = stateA.rsqrt().mul_(grad);
  }
  double rms = update.norm().item<double>() / std::sqrt(static_cast<double>(update.numel()));
  update.div_(std::max(rms / clipThreshold, 1.0));
  update.mul_(lr);
  if (beta1 > 0 && info[3].As<Napi::Number>().Int32Value() >= 0) {
    at::Tensor& expAvg = tensorAt(info[3].As<Napi::Number>().Int32Value());
    expAvg.mul_(beta1).add_(update, 1 - beta1);
    update = expAvg;
  }
  if (weightDecay != 0) param.add_(param, -weightDecay * lr);
  param.add_(-update.to(param.scalar_type()));
  return Napi::Boolean::New(env, true);
}

// Total L2 norm of the gradients of `params` (an array of handles); when maxNorm > 0 scales them
// by min(1, maxNorm / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_ does. Returns the norm
// before clipping (non-finite when a gradient is).
DDPO_OP(clipGradNorm) {
  c10::NoGradGuard noGrad;
  std::vector<at::Tensor> params = Tensors(info, 0);
  double maxNorm = D(info, 1);
  std::vector<at::Tensor> norms;
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : params) {
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    grads.push_back(g);
    norms.push_back(at::linalg_vector_norm(g, 2).to(at::kFloat));
  }
  if (grads.empty()) return Napi::Number::New(env, 0);
  at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2);
  double totalNorm = total.item<double>();
  if (maxNorm > 0) {
    double coef = maxNorm / (totalNorm + 1e-6);
    if (coef < 1.0) {
      for (at::Tensor& g : grads) g.mul_(coef);
    }
  }
  return Napi::Number::New(env, totalNorm);
}

// Scales every gradient in place (gradient averaging over accumulation steps or ranks).
DDPO_OP(scaleGrads) {
  c10::NoGradGuard noGrad;
  std::vector<at::Tensor> params = Tensors(info, 0);
  double factor = D(info, 1);
  for (const at::Tensor& p : params) {
    const at::Tensor& g = p.grad();
    if (g.defined()) const_cast<at::Tensor&>(g).mul_(factor);
  }
  return env.Undefined();
}

void registerOptim(Napi::Env env, Napi::Object exports) {
#define EXPORT(fn) exports.Set(#fn, Napi::Function::New(env, fn, #fn))
  EXPORT(adamwStep);
  EXPORT(adafactorStep);
  EXPORT(clipGradNorm);
  EXPORT(scaleGrads);
#undef EXPORT
}

}  // namespace ddpo
