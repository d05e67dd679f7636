// The flow-matching sampling loop shared by the SD3 and Flux pipelines: Euler steps over a
// FlowSchedule with an optional classifier-free guidance batch, as StableDiffusion3Pipeline and
// FluxPipeline (v0.30) run it.
import { cat, noGrad, tidy, type Tensor } from "../../tensor/index.js";
import { flowEulerStep, type FlowSchedule } from "./scheduler.js";

/**
 * The model's velocity for a batch: `x` [B, …] latents, `timestep` the schedule's value (σ·T,
 * float32) for this step, `cfgBatch` true when x holds [uncond…, cond…] (2× the latents).
 */
export type FlowVelocity = (x: Tensor, timestep: number, step: number, cfgBatch: boolean) => Tensor;

export interface FlowSampleOptions {
  /** Initial latents (used as is: flow matching has no init_noise_sigma). */
  latents: Tensor;
  schedule: FlowSchedule;
  velocity: FlowVelocity;
  /** > 1: a [negative, prompt] batch and u + g·(c − u) (SD3); ≤ 1 or absent: one pass (Flux). */
  guidanceScale?: number;
  /** Called with the latents after each step (step index, latents; the caller must not keep it without clone). */
  onStep?: (step: number, latents: Tensor) => void;
}

/** Runs the steps; returns the final latents (float32). */
export function flowSample(o: FlowSampleOptions): Tensor {
  const cfg = (o.guidanceScale ?? 1) > 1;
  return noGrad(() => {
    let x = o.latents;
    for (let i = 0; i < o.schedule.timesteps.length; i++) {
      const next = tidy(() => {
        const input = cfg ? cat([x, x], 0) : x;
        let v = o.velocity(input, o.schedule.timesteps[i]!, i, cfg);
        if (cfg) {
          const [u, c] = v.chunk(2, 0) as [Tensor, Tensor];
          v = u.add(c.sub(u).mul(o.guidanceScale!));
        }
        return flowEulerStep(x, v, o.schedule, i);
      });
      if (x !== o.latents) x.dispose();
      x = next;
      o.onStep?.(i, x);
    }
    return x === o.latents ? x.clone() : x;
  });
}
