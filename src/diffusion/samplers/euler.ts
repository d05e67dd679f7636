// Euler (Karras et al. 2022, Algorithm 2 without churn), as diffusers' EulerDiscreteScheduler.
// The state is k-diffusion's x = x_t/√ᾱ_t = x0 + σ·ε with σ = √((1−ᾱ)/ᾱ); the network sees
// x/√(σ²+1) (scale_model_input) and the timestep; then
//   x̂0 = x − σ·ε̂ (ε) | x̂0 = −σ/√(σ²+1)·v̂ + x/(σ²+1) (v) | x̂0 = model output (sample)
//   x ← x + (x − x̂0)/σ · (σ_next − σ).
// σ at fractional timesteps is linearly interpolated in t (np.interp); σ_n = 0.
import { tidy, type Tensor } from "../../tensor/index.js";
import type { NoiseSchedule, PredictionType } from "../schedule.js";
import { checkIndex, kSigmaTable, resolveSpacing } from "./common.js";
import { eulerTimesteps, interpTable } from "./timesteps.js";
import type { Sampler, SamplerOptions, SamplerProcess } from "./types.js";

export function eulerScheduleTimesteps(schedule: NoiseSchedule, steps: number, opts?: SamplerOptions): number[] {
  const c = schedule.config;
  return eulerTimesteps(resolveSpacing(schedule, opts, "linspace"), c.numTrainTimesteps, steps, c.stepsOffset);
}

/** The run's σ_0 … σ_{n−1} at its timesteps, then 0, each rounded to float32 as diffusers stores them. */
export function eulerSigmas(schedule: NoiseSchedule, ts: readonly number[]): number[] {
  const table = kSigmaTable(schedule);
  return [...ts.map((t) => Math.fround(interpTable(table, t))), 0];
}

/** diffusers' init_noise_sigma: σ_max for linspace/trailing spacing, √(σ_max²+1) for leading. */
export function eulerInitNoiseSigma(sigmas: readonly number[], spacing: string): number {
  const max = Math.max(...sigmas);
  return spacing === "leading" ? Math.sqrt(max * max + 1) : max;
}

/** x̂0 from the raw output in the σ-parameterisation. */
export function kX0(type: PredictionType, x: Tensor, out: Tensor, sigma: number): Tensor {
  switch (type) {
    case "epsilon":
      return x.addScaled(out, -sigma);
    case "v_prediction":
      return tidy(() => out.mul(-sigma / Math.sqrt(sigma * sigma + 1)).addScaled(x, 1 / (sigma * sigma + 1)));
    case "sample":
      return out.clone();
    default:
      throw new Error(`unknown prediction type "${String(type)}"`);
  }
}

export function kProcessBase(schedule: NoiseSchedule, steps: number, opts: SamplerOptions | undefined) {
  const spacing = resolveSpacing(schedule, opts, "linspace");
  const ts = eulerScheduleTimesteps(schedule, steps, opts);
  const sigmas = eulerSigmas(schedule, ts);
  return {
    ts,
    sigmas,
    initNoiseSigma: eulerInitNoiseSigma(sigmas, spacing),
    scaleModelInput: (x: Tensor, index: number): Tensor => {
      checkIndex(index, ts.length);
      const s = sigmas[index]!;
      return x.div(Math.sqrt(s * s + 1));
    },
    addNoise: (x0: Tensor, noise: Tensor, index: number): Tensor => x0.addScaled(noise, sigmas[index]!),
  };
}

export const euler: Sampler = {
  name: "euler",
  defaultSpacing: "linspace",
  timesteps: eulerScheduleTimesteps,
  prepare(schedule, steps, opts): SamplerProcess {
    const base = kProcessBase(schedule, steps, opts);
    const { ts, sigmas } = base;
    const type = schedule.predictionType;
    return {
      timesteps: ts,
      initNoiseSigma: base.initNoiseSigma,
      stochastic: false,
      scaleModelInput: base.scaleModelInput,
      addNoise: base.addNoise,
      step(out, index, x) {
        checkIndex(index, ts.length);
        const sigma = sigmas[index]!;
        const dt = sigmas[index + 1]! - sigma;
        return tidy(() => {
          const x0 = kX0(type, x, out, sigma);
          const derivative = x.sub(x0).div(sigma);
          return x.addScaled(derivative, dt);
        });
      },
      dispose() {},
    };
  },
};
