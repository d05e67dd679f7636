// Helpers the samplers share.
import type { Tensor } from "../../tensor/index.js";
import type { NoiseSchedule, TimestepSpacing } from "../schedule.js";
import type { SamplerOptions } from "./types.js";

export function resolveSpacing(schedule: NoiseSchedule, opts: SamplerOptions | undefined, fallback: TimestepSpacing): TimestepSpacing {
  return opts?.spacing ?? schedule.config.timestepSpacing ?? fallback;
}

/**
 * ᾱ as the k-diffusion-style schedulers (Euler, Euler ancestral, DPM-Solver) hold it: with a
 * zero-terminal-SNR schedule diffusers sets ᾱ_{T−1} = 2⁻²⁴ so that σ_max stays finite.
 */
export function kAlphasCumprod(schedule: NoiseSchedule): Float64Array {
  const ac = schedule.alphasCumprod.slice();
  if (schedule.config.rescaleZeroTerminalSnr) ac[ac.length - 1] = 2 ** -24;
  return ac;
}

/** σ_t = √((1−ᾱ_t)/ᾱ_t) over the k-style ᾱ table. */
export function kSigmaTable(schedule: NoiseSchedule): Float64Array {
  return kAlphasCumprod(schedule).map((a) => Math.sqrt((1 - a) / a));
}

/** Clamps x0 to ±range when the schedule asks for it (DDPM/DDIM's clip_sample). */
export function maybeClip(schedule: NoiseSchedule, x0: Tensor): Tensor {
  if (!schedule.config.clipSample) return x0;
  const r = schedule.config.clipSampleRange;
  const out = x0.clamp(-r, r);
  x0.dispose();
  return out;
}

export function checkIndex(index: number, n: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= n) {
    throw new Error(`step index ${index} is outside the run's ${n} timesteps`);
  }
}

/** Throws a clear error when spacing + steps_offset push a timestep outside [0, T−1]. */
export function checkRunTimesteps(schedule: NoiseSchedule, ts: readonly number[], sampler: string, spacing: TimestepSpacing): void {
  const T = schedule.numTrainTimesteps;
  const bad = ts.find((t) => !(t >= 0 && t <= T - 1));
  if (bad !== undefined) {
    throw new Error(
      `${sampler}: ${ts.length} steps with timestepSpacing "${spacing}" and stepsOffset ${schedule.config.stepsOffset} ` +
        `give timestep ${bad}, outside [0, ${T - 1}]; use fewer steps, spacing "trailing", or stepsOffset 0`,
    );
  }
}
