// diffusers' `set_timesteps`: which training timesteps an n-step sampler visits.
//
// The three spacings of Lin et al. 2023, Table 2, each exactly as diffusers computes it (numpy's
// linspace / arange / round-half-to-even are reproduced, since their rounding decides which
// integer timestep is picked):
//   leading   t_i = i·⌊T/n⌋ + steps_offset       (SD1.5 with DDIM: 981, 961, …, 1)
//   trailing  t_i = round(T − i·T/n) − 1          (always starts at T−1)
//   linspace  t_i = round(i·(T−1)/(n−1))          (both ends included)
// Lists are returned high to low (the order sampling visits them).
import type { TimestepSpacing } from "../schedule.js";
import { roundHalfEven } from "../../util/rounding.js";

/** Throws unless `steps` is an integer in [1, T]. */
export function checkSteps(steps: number, numTrainTimesteps: number, option = "steps"): void {
  if (!Number.isInteger(steps) || steps < 1 || steps > numTrainTimesteps) {
    throw new Error(
      `${option} must be an integer in [1, ${numTrainTimesteps}] (the schedule's num_train_timesteps), got ${steps}`,
    );
  }
}

export { roundHalfEven };

/** np.linspace(start, stop, num) (endpoint included). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  const out: number[] = [];
  const div = num - 1;
  const step = div > 0 ? (stop - start) / div : NaN;
  for (let i = 0; i < num; i++) out.push(div > 0 ? i * step + start : i * (stop - start) + start);
  if (num > 1) out[num - 1] = stop;
  return out;
}

/** np.arange(start, stop, step) for floats: length ⌈(stop−start)/step⌉, values start + i·δ. */
export function npArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(Math.ceil((stop - start) / step), 0);
  const out: number[] = [];
  if (len === 0) return out;
  const delta = start + step - start; // numpy fills with the difference of its first two values
  for (let i = 0; i < len; i++) out.push(i === 0 ? start : i === 1 ? start + step : start + i * delta);
  return out;
}

function descendingRange(n: number, ratio: number): number[] {
  const out: number[] = [];
  for (let i = n - 1; i >= 0; i--) out.push(i * ratio);
  return out;
}

/** DDPMScheduler / DDIMScheduler.set_timesteps (integer timesteps). */
export function discreteTimesteps(spacing: TimestepSpacing, T: number, steps: number, stepsOffset: number): number[] {
  checkSteps(steps, T);
  switch (spacing) {
    case "linspace":
      return npLinspace(0, T - 1, steps).map(roundHalfEven).reverse();
    case "leading":
      return descendingRange(steps, Math.floor(T / steps)).map((t) => t + stepsOffset);
    case "trailing":
      return npArange(T, 0, -T / steps).map((t) => roundHalfEven(t) - 1);
    default:
      throw badSpacing(spacing);
  }
}

/** EulerDiscreteScheduler / EulerAncestralDiscreteScheduler.set_timesteps (float32 timesteps). */
export function eulerTimesteps(spacing: TimestepSpacing, T: number, steps: number, stepsOffset: number): number[] {
  checkSteps(steps, T);
  switch (spacing) {
    case "linspace":
      return npLinspace(0, T - 1, steps).map(Math.fround).reverse();
    case "leading":
      return descendingRange(steps, Math.floor(T / steps)).map((t) => Math.fround(t + stepsOffset));
    case "trailing":
      return npArange(T, 0, -T / steps).map((t) => Math.fround(roundHalfEven(t) - 1));
    default:
      throw badSpacing(spacing);
  }
}

/** DPMSolverMultistepScheduler.set_timesteps (integer timesteps; n+1 points with the last dropped). */
export function dpmTimesteps(spacing: TimestepSpacing, T: number, steps: number, stepsOffset: number): number[] {
  checkSteps(steps, T);
  switch (spacing) {
    case "linspace":
      return npLinspace(0, T - 1, steps + 1).map(roundHalfEven).reverse().slice(0, steps);
    case "leading":
      return descendingRange(steps + 1, Math.floor(T / (steps + 1))).slice(0, steps).map((t) => t + stepsOffset);
    case "trailing":
      return npArange(T, 0, -T / steps).map((t) => roundHalfEven(t) - 1);
    default:
      throw badSpacing(spacing);
  }
}

function badSpacing(spacing: unknown): Error {
  return new Error(`timestepSpacing "${String(spacing)}" is not one of leading, trailing, linspace`);
}

/** np.interp(x, [0, 1, …, len−1], table): linear interpolation at a (possibly fractional) timestep. */
export function interpTable(table: ArrayLike<number>, x: number): number {
  const n = table.length;
  if (x <= 0) return table[0]!;
  if (x >= n - 1) return table[n - 1]!;
  const j = Math.floor(x);
  const lo = table[j]!;
  if (x === j) return lo;
  const hi = table[j + 1]!;
  return (hi - lo) * (x - j) + lo;
}

/**
 * diffusers' img2img get_timesteps: init_timestep = min(⌊steps·strength⌋, steps), and the run
 * starts at index steps − init_timestep of the full n-step list (so 50 steps at strength 0.6 run
 * the last 30). strength 0 runs nothing (the input comes back unchanged); 1 runs everything.
 */
export function img2imgStart(steps: number, strength: number): { startIndex: number; runSteps: number } {
  if (!(typeof strength === "number" && strength >= 0 && strength <= 1)) {
    throw new Error(`strength must be a number in [0, 1] (0 returns the input, 1 ignores it), got ${strength}`);
  }
  const initTimestep = Math.min(Math.floor(steps * strength), steps);
  const startIndex = Math.max(steps - initTimestep, 0);
  return { startIndex, runSteps: steps - startIndex };
}
