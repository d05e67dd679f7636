// Forward noising q(x_t | x_0), the three parameterisations (ε, x_0, v) and the training target.
//
// With a = √ᾱ_t and s = √(1−ᾱ_t):
//   x_t = a·x0 + s·ε                    (forward process)
//   v   = a·ε − s·x0                    (Salimans & Ho's velocity; diffusers' get_velocity)
//   x0  = (x_t − s·ε)/a = a·x_t − s·v,  ε = (x_t − a·x0)/s = a·v + s·x_t
// Coefficients are numbers (one timestep for the whole batch) or [N,1,1,1] tensors (per sample).
import { tidy, type Tensor } from "../tensor/index.js";
import type { NoiseSchedule, PredictionType } from "./schedule.js";

export type Coef = number | Tensor;
/** Per-sample integer timesteps: an integer tensor [N] or plain numbers. */
export type Timesteps = Tensor | readonly number[];

function coefficients(schedule: NoiseSchedule, x: Tensor, t: Timesteps): { a: Tensor; s: Tensor } {
  const n = Array.isArray(t) ? t.length : (t as Tensor).shape[0];
  if (n !== x.shape[0]) {
    throw new Error(`timesteps hold ${n} values but the batch has ${x.shape[0]} samples`);
  }
  const { alpha, sigma } = schedule.noisingCoefficients(t, x.ndim, x.device);
  return { a: alpha, s: sigma };
}

/** x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise, with t per sample (diffusers' add_noise for DDPM/DDIM). */
export function addNoise(schedule: NoiseSchedule, x0: Tensor, noise: Tensor, t: Timesteps): Tensor {
  return tidy(() => {
    const { a, s } = coefficients(schedule, x0, t);
    return x0.mul(a).add(noise.mul(s));
  });
}

/** v = √ᾱ_t·noise − √(1−ᾱ_t)·x0 (diffusers' get_velocity). */
export function velocity(schedule: NoiseSchedule, x0: Tensor, noise: Tensor, t: Timesteps): Tensor {
  return tidy(() => {
    const { a, s } = coefficients(schedule, x0, t);
    return noise.mul(a).sub(x0.mul(s));
  });
}

/** What the network learns to output: ε, v or x0, by the schedule's prediction type. */
export function trainingTarget(
  predictionType: PredictionType,
  schedule: NoiseSchedule,
  x0: Tensor,
  noise: Tensor,
  t: Timesteps,
): Tensor {
  switch (predictionType) {
    case "epsilon":
      return noise.clone();
    case "v_prediction":
      return velocity(schedule, x0, noise, t);
    case "sample":
      return x0.clone();
    default:
      throw new Error(`unknown prediction type "${String(predictionType)}"; use epsilon, v_prediction or sample`);
  }
}

// ---- conversions between parameterisations (a = √ᾱ_t, s = √(1−ᾱ_t)) --------------------------

/** x0 from the network's raw output at x_t. */
export function predToX0(type: PredictionType, xt: Tensor, pred: Tensor, a: Coef, s: Coef): Tensor {
  switch (type) {
    case "epsilon":
      return tidy(() => xt.sub(pred.mul(s)).div(a));
    case "v_prediction":
      return tidy(() => xt.mul(a).sub(pred.mul(s)));
    case "sample":
      return pred.clone();
    default:
      throw new Error(`unknown prediction type "${String(type)}"`);
  }
}

/** ε from the network's raw output at x_t. */
export function predToEps(type: PredictionType, xt: Tensor, pred: Tensor, a: Coef, s: Coef): Tensor {
  switch (type) {
    case "epsilon":
      return pred.clone();
    case "v_prediction":
      return tidy(() => pred.mul(a).add(xt.mul(s)));
    case "sample":
      return tidy(() => xt.sub(pred.mul(a)).div(s));
    default:
      throw new Error(`unknown prediction type "${String(type)}"`);
  }
}

/** v from the network's raw output at x_t. */
export function predToV(type: PredictionType, xt: Tensor, pred: Tensor, a: Coef, s: Coef): Tensor {
  if (type === "v_prediction") return pred.clone();
  return tidy(() => {
    const x0 = predToX0(type, xt, pred, a, s);
    const eps = predToEps(type, xt, pred, a, s);
    return eps.mul(a).sub(x0.mul(s));
  });
}

/** Both x0 and ε from the raw output (what DDPM/DDIM steps need). */
export function predToX0Eps(type: PredictionType, xt: Tensor, pred: Tensor, a: Coef, s: Coef): { x0: Tensor; eps: Tensor } {
  return { x0: predToX0(type, xt, pred, a, s), eps: predToEps(type, xt, pred, a, s) };
}

/** The raw output a network of `type` would give for (x0, ε) at x_t = a·x0 + s·ε. */
export function x0EpsToPred(type: PredictionType, x0: Tensor, eps: Tensor, a: Coef, s: Coef): Tensor {
  switch (type) {
    case "epsilon":
      return eps.clone();
    case "sample":
      return x0.clone();
    case "v_prediction":
      return tidy(() => eps.mul(a).sub(x0.mul(s)));
    default:
      throw new Error(`unknown prediction type "${String(type)}"`);
  }
}
