// What the training step needs from a noise schedule, and the closed forms it uses.
//
// LOCAL HELPER: src/diffusion (NoiseSchedule, addNoise, trainingTarget) is being written in
// parallel. Until it lands in git this file holds the two closed forms the step needs, so the
// trainer builds on its own; `NoiseSchedule` satisfies `TrainSchedule` structurally, so passing one
// works already. Replace the bodies with src/diffusion's addNoise/trainingTarget once it is committed.
//
//   x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε                 (forward process)
//   v   = √ᾱ_t·ε − √(1−ᾱ_t)·x0                 (velocity target, diffusers' get_velocity)
import { tensor, type Tensor } from "../tensor/index.js";

export interface TrainSchedule {
  /** T: timesteps are drawn from {0 … T−1}. */
  readonly numTrainTimesteps: number;
  /** √ᾱ_t and √(1−ᾱ_t) for t = 0 … T−1 (float64). */
  readonly sqrtAlphasCumprod: Float64Array;
  readonly sqrtOneMinusAlphasCumprod: Float64Array;
}

export type TrainPredictionType = "epsilon" | "v_prediction";

/** SD1.5's scaled-linear schedule (β from 0.00085 to 0.012, linear in √β), or any T/β range. */
export function scaledLinearSchedule(T = 1000, betaStart = 0.00085, betaEnd = 0.012): TrainSchedule {
  const a = Math.sqrt(betaStart);
  const b = Math.sqrt(betaEnd);
  const sqrtAbar = new Float64Array(T);
  const sqrtOneMinus = new Float64Array(T);
  let prod = 1;
  for (let i = 0; i < T; i++) {
    const beta = (a + ((b - a) * i) / (T - 1)) ** 2;
    prod *= 1 - beta;
    sqrtAbar[i] = Math.sqrt(prod);
    sqrtOneMinus[i] = Math.sqrt(1 - prod);
  }
  return { numTrainTimesteps: T, sqrtAlphasCumprod: sqrtAbar, sqrtOneMinusAlphasCumprod: sqrtOneMinus };
}

/** A float64 table at per-sample timesteps as an f32 [N, 1, …, 1] tensor (ndim dims). */
export function gatherCoefficient(table: Float64Array, t: readonly number[], ndim: number, device: string): Tensor {
  const vals = new Float32Array(t.length);
  t.forEach((ti, i) => {
    const v = table[ti];
    if (v === undefined || !Number.isInteger(ti)) throw new Error(`timestep ${ti} is outside the schedule (0 … ${table.length - 1})`);
    vals[i] = v;
  });
  return tensor(vals, [t.length, ...new Array<number>(ndim - 1).fill(1)], { device });
}

/** x_t and the training target (ε or v) for clean x0, noise ε and per-sample timesteps t. */
export function noiseAndTarget(
  schedule: TrainSchedule,
  predictionType: TrainPredictionType,
  x0: Tensor,
  noise: Tensor,
  t: readonly number[],
): { noisy: Tensor; target: Tensor } {
  const a = gatherCoefficient(schedule.sqrtAlphasCumprod, t, x0.ndim, x0.device);
  const s = gatherCoefficient(schedule.sqrtOneMinusAlphasCumprod, t, x0.ndim, x0.device);
  const noisy = x0.mul(a).add(noise.mul(s));
  const target = predictionType === "epsilon" ? noise : noise.mul(a).sub(x0.mul(s));
  return { noisy, target };
}
