// Euler ancestral (k-diffusion's sample_euler_ancestral, η = 1), as diffusers'
// EulerAncestralDiscreteScheduler: with σ = σ_i, σ' = σ_{i+1},
//   σ_up = √(σ'²(σ² − σ'²)/σ²),  σ_down = √(σ'² − σ_up²)
//   x ← x + (x − x̂0)/σ · (σ_down − σ) + σ_up·z,   z ~ N(0, I) drawn at every step (also the last,
// where σ_up = 0, so noise streams line up with diffusers').
import { tidy } from "../../tensor/index.js";
import { checkIndex } from "./common.js";
import { eulerScheduleTimesteps, kProcessBase, kX0 } from "./euler.js";
import type { Sampler, SamplerProcess } from "./types.js";

export const eulerAncestral: Sampler = {
  name: "euler_ancestral",
  defaultSpacing: "linspace",
  timesteps: eulerScheduleTimesteps,
  prepare(schedule, steps, opts): SamplerProcess {
    const base = kProcessBase(schedule, steps, opts);
    const { ts, sigmas } = base;
    const type = schedule.predictionType;
    return {
      timesteps: ts,
      initNoiseSigma: base.initNoiseSigma,
      stochastic: true,
      scaleModelInput: base.scaleModelInput,
      addNoise: base.addNoise,
      step(out, index, x, noise) {
        checkIndex(index, ts.length);
        const from = sigmas[index]!;
        const to = sigmas[index + 1]!;
        const up = Math.sqrt((to * to * (from * from - to * to)) / (from * from));
        const down = Math.sqrt(Math.max(to * to - up * up, 0));
        return tidy(() => {
          const x0 = kX0(type, x, out, from);
          const derivative = x.sub(x0).div(from);
          const moved = x.addScaled(derivative, down - from);
          return moved.addScaled(noise(out.shape), up);
        });
      },
      dispose() {},
    };
  },
};
