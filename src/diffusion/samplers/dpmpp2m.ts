// DPM-Solver++(2M) (Lu et al. 2022), as diffusers' DPMSolverMultistepScheduler with its defaults
// (solver_order 2, algorithm dpmsolver++, solver_type midpoint, lower_order_final, final σ = 0).
// State is the VP sample x_t; with σ from the run's table, α = 1/√(σ²+1), σ_t = σ·α, λ = log α − log σ_t:
//   D0 = x̂0 now, D1 = (D0 − x̂0 before)/r0, r0 = h_prev/h, h = λ_next − λ_now
//   first order:  x ← (σ_next/σ_now)·x − α_next(e^{−h} − 1)·D0
//   second order: same, minus ½·α_next(e^{−h} − 1)·D1.
// The first step and the last step (final σ = 0) are first order.
import { keep, tidy, type Tensor } from "../../tensor/index.js";
import type { NoiseSchedule } from "../schedule.js";
import { checkIndex, kSigmaTable, resolveSpacing } from "./common.js";
import { dpmTimesteps, interpTable } from "./timesteps.js";
import type { Sampler, SamplerOptions, SamplerProcess } from "./types.js";

function timesteps(schedule: NoiseSchedule, steps: number, opts?: SamplerOptions): number[] {
  const c = schedule.config;
  return dpmTimesteps(resolveSpacing(schedule, opts, "linspace"), c.numTrainTimesteps, steps, c.stepsOffset);
}

function alphaSigma(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const sigmaT = sigma * alpha;
  return { alpha, sigmaT, lambda: Math.log(alpha) - Math.log(sigmaT) };
}

export const dpmpp2m: Sampler = {
  name: "dpmpp_2m",
  defaultSpacing: "linspace",
  timesteps,
  prepare(schedule, steps, opts): SamplerProcess {
    const ts = timesteps(schedule, steps, opts);
    const table = kSigmaTable(schedule);
    const sigmas = [...ts.map((t) => Math.fround(interpTable(table, t))), 0];
    const type = schedule.predictionType;
    let previousX0: Tensor | null = null;
    let done = 0; // diffusers' lower_order_nums
    return {
      timesteps: ts,
      initNoiseSigma: 1,
      stochastic: false,
      scaleModelInput: (x) => x,
      addNoise(x0, noise, index) {
        checkIndex(index, ts.length);
        const { alpha, sigmaT } = alphaSigma(sigmas[index]!);
        return tidy(() => x0.mul(alpha).addScaled(noise, sigmaT));
      },
      step(out, index, x) {
        checkIndex(index, ts.length);
        const now = alphaSigma(sigmas[index]!);
        const next = alphaSigma(sigmas[index + 1]!);
        const x0 = tidy(() => {
          switch (type) {
            case "epsilon":
              return x.addScaled(out, -now.sigmaT).div(now.alpha);
            case "v_prediction":
              return x.mul(now.alpha).addScaled(out, -now.sigmaT);
            case "sample":
              return out.clone();
            default:
              throw new Error(`unknown prediction type "${String(type)}"`);
          }
        });
        const h = next.lambda - now.lambda;
        const phi = next.alpha * (Math.exp(-h) - 1); // α_next(e^{−h} − 1); −1 at the final σ = 0
        const ratio = next.sigmaT / now.sigmaT;
        const lowerOrderFinal = index === ts.length - 1;
        const result = tidy(() => {
          if (previousX0 === null || done < 1 || lowerOrderFinal) {
            return x.mul(ratio).addScaled(x0, -phi);
          }
          const prev = alphaSigma(sigmas[index - 1]!);
          const r0 = (now.lambda - prev.lambda) / h;
          const d1 = x0.sub(previousX0).mul(1 / r0);
          return x.mul(ratio).addScaled(x0, -phi).addScaled(d1, -0.5 * phi);
        });
        previousX0?.dispose();
        previousX0 = keep(x0);
        done += 1;
        return result;
      },
      dispose() {
        previousX0?.dispose();
        previousX0 = null;
      },
    };
  },
};
