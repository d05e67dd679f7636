// DDIM (Song et al. 2021), as diffusers' DDIMScheduler: from t to t' = t − ⌊T/n⌋,
//   x_{t'} = √ᾱ_{t'}·x̂0 + √(1 − ᾱ_{t'} − σ²)·ε̂ + σ·z,   σ = η·√((1−ᾱ_{t'})/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_{t'})),
// with ᾱ_{t'} = (set_alpha_to_one ? 1 : ᾱ_0) once t' < 0. η = 0 is deterministic (no noise drawn).
// `ddimInvert` runs the same update upwards (diffusers' DDIMInverseScheduler idea): the η = 0
// map from x0 to the noise that DDIM turns back into x0.
import { noGrad, tidy, type Tensor } from "../../tensor/index.js";
import { addNoise, predToEps, predToX0 } from "../noising.js";
import type { NoiseSchedule } from "../schedule.js";
import { checkIndex, checkRunTimesteps, maybeClip, resolveSpacing } from "./common.js";
import { discreteTimesteps } from "./timesteps.js";
import type { DenoiseModel, Sampler, SamplerOptions, SamplerProcess } from "./types.js";

function timesteps(schedule: NoiseSchedule, steps: number, opts?: SamplerOptions): number[] {
  const c = schedule.config;
  return discreteTimesteps(resolveSpacing(schedule, opts, "leading"), c.numTrainTimesteps, steps, c.stepsOffset);
}

export function checkEta(eta: number): void {
  if (!(typeof eta === "number" && Number.isFinite(eta) && eta >= 0)) {
    throw new Error(`eta must be a finite number ≥ 0 (0 = deterministic DDIM, 1 = DDPM-like), got ${eta}`);
  }
}

export const ddim: Sampler = {
  name: "ddim",
  defaultSpacing: "leading",
  timesteps,
  prepare(schedule, steps, opts): SamplerProcess {
    const eta = opts?.eta ?? 0;
    checkEta(eta);
    const ts = timesteps(schedule, steps, opts);
    checkRunTimesteps(schedule, ts, "ddim", resolveSpacing(schedule, opts, "leading"));
    const ac = schedule.alphasCumprod;
    const type = schedule.predictionType;
    const T = schedule.numTrainTimesteps;
    const finalAbar = schedule.config.setAlphaToOne ? 1 : ac[0]!;
    const stride = Math.floor(T / steps);
    return {
      timesteps: ts,
      initNoiseSigma: 1,
      stochastic: eta > 0,
      scaleModelInput: (x) => x,
      addNoise: (x0, noise, index) => addNoise(schedule, x0, noise, new Array<number>(x0.shape[0]!).fill(ts[index]!)),
      step(out, index, x, noise) {
        checkIndex(index, ts.length);
        const t = ts[index]!;
        const prevT = t - stride;
        const abar = ac[t]!;
        const abarPrev = prevT >= 0 ? ac[prevT]! : finalAbar;
        const a = Math.sqrt(abar);
        const s = Math.sqrt(1 - abar);
        return tidy(() => {
          const eps = predToEps(type, x, out, a, s);
          const x0 = maybeClip(schedule, predToX0(type, x, out, a, s));
          const variance = ((1 - abarPrev) / (1 - abar)) * (1 - abar / abarPrev);
          const std = eta * Math.sqrt(variance);
          let prev = x0.mul(Math.sqrt(abarPrev)).addScaled(eps, Math.sqrt(Math.max(1 - abarPrev - std * std, 0)));
          if (eta > 0) prev = prev.addScaled(noise(out.shape), std);
          return prev;
        });
      },
      dispose() {},
    };
  },
};

/**
 * Deterministic DDIM inversion: runs the η = 0 update from x0 up through the run's timesteps
 * (low to high), with ε̂(x_current, t_next) standing in for ε̂(x_next, t_next), and returns the latent at the highest
 * timestep. `ddim` with the same schedule, steps and model maps it back to ≈ x0.
 */
export function ddimInvert(opts: {
  model: DenoiseModel;
  schedule: NoiseSchedule;
  steps: number;
  x0: Tensor;
  spacing?: SamplerOptions["spacing"];
}): Tensor {
  const { model, schedule, steps } = opts;
  const ts = timesteps(schedule, steps, { spacing: opts.spacing }).slice().reverse();
  const ac = schedule.alphasCumprod;
  const type = schedule.predictionType;
  const stride = Math.floor(schedule.numTrainTimesteps / steps);
  const finalAbar = schedule.config.setAlphaToOne ? 1 : ac[0]!;
  return noGrad(() => {
    let x = opts.x0.clone();
    for (const tNext of ts) {
      const tCur = tNext - stride;
      const abarCur = tCur >= 0 ? ac[tCur]! : finalAbar;
      const abarNext = ac[tNext]!;
      const next = tidy(() => {
        // As diffusers' DDIMInverseScheduler: the model is asked at the target timestep (the one
        // DDIM will query when it steps back down), with the current latent.
        const aCur = Math.sqrt(abarCur);
        const sCur = Math.sqrt(1 - abarCur);
        const out = model(x, tNext);
        const eps = predToEps(type, x, out, aCur, sCur);
        const x0 = predToX0(type, x, out, aCur, sCur);
        return x0.mul(Math.sqrt(abarNext)).addScaled(eps, Math.sqrt(1 - abarNext));
      });
      x.dispose();
      x = next;
    }
    return x;
  });
}
