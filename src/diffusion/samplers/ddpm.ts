// DDPM ancestral sampling (Ho et al. 2020), as diffusers' DDPMScheduler with
// variance_type "fixed_small": from x_t to the previous kept timestep t' (−1 after the last),
//   x_{t'} = c0·x̂0 + cx·x_t + σ·z,   c0 = √ᾱ_{t'}·β̃/(1−ᾱ_t),  cx = √(ᾱ_t/ᾱ_{t'})·(1−ᾱ_{t'})/(1−ᾱ_t),
//   β̃ = 1 − ᾱ_t/ᾱ_{t'},  σ² = max((1−ᾱ_{t'})/(1−ᾱ_t)·β̃, 1e−20), noise only while t > 0.
import { addNoise } from "../noising.js";
import { predToX0 } from "../noising.js";
import type { NoiseSchedule } from "../schedule.js";
import { checkIndex, checkRunTimesteps, maybeClip, resolveSpacing } from "./common.js";
import { discreteTimesteps } from "./timesteps.js";
import type { Sampler, SamplerOptions, SamplerProcess } from "./types.js";

function timesteps(schedule: NoiseSchedule, steps: number, opts?: SamplerOptions): number[] {
  const c = schedule.config;
  return discreteTimesteps(resolveSpacing(schedule, opts, "leading"), c.numTrainTimesteps, steps, c.stepsOffset);
}

export const ddpm: Sampler = {
  name: "ddpm",
  defaultSpacing: "leading",
  timesteps,
  prepare(schedule, steps, opts): SamplerProcess {
    const ts = timesteps(schedule, steps, opts);
    checkRunTimesteps(schedule, ts, "ddpm", resolveSpacing(schedule, opts, "leading"));
    const ac = schedule.alphasCumprod;
    const type = schedule.predictionType;
    return {
      timesteps: ts,
      initNoiseSigma: 1,
      stochastic: true,
      scaleModelInput: (x) => x,
      addNoise: (x0, noise, index) => addNoise(schedule, x0, noise, new Array<number>(x0.shape[0]!).fill(ts[index]!)),
      step(out, index, x, noise) {
        checkIndex(index, ts.length);
        const t = ts[index]!;
        const prevT = index === ts.length - 1 ? -1 : ts[index + 1]!;
        const abar = ac[t]!;
        const abarPrev = prevT >= 0 ? ac[prevT]! : 1;
        const betaProd = 1 - abar;
        const betaProdPrev = 1 - abarPrev;
        const curAlpha = abar / abarPrev;
        const curBeta = 1 - curAlpha;
        const x0 = maybeClip(schedule, predToX0(type, x, out, Math.sqrt(abar), Math.sqrt(betaProd)));
        const c0 = (Math.sqrt(abarPrev) * curBeta) / betaProd;
        const cx = (Math.sqrt(curAlpha) * betaProdPrev) / betaProd;
        const scaledX0 = x0.mul(c0);
        x0.dispose();
        let prev = scaledX0.addScaled(x, cx);
        scaledX0.dispose();
        if (t > 0) {
          const variance = Math.max((betaProdPrev / betaProd) * curBeta, 1e-20);
          const z = noise(out.shape);
          const withNoise = prev.addScaled(z, Math.sqrt(variance));
          z.dispose();
          prev.dispose();
          prev = withNoise;
        }
        return prev;
      },
      dispose() {},
    };
  },
};
